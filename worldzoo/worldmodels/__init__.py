"""World Models (Ha & Schmidhuber 2018): V (`vae` slot), M (`memory` slot) and C (`controller`
slot) registered as variants; `trainer.WorldModelsTrainer` runs the pipeline. Importing this
package registers the variants."""

from worldzoo.worldmodels import controller, memory, vae  # noqa: F401
