"""Built-in component variants; importing this package registers them all."""

from worldzoo.components import (  # noqa: F401
    actor,
    codec,
    cont,
    critic_target,
    heads,
    kl,
    optim,
    return_norm,
    rssm,
)
