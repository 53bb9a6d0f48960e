import os
import tempfile

os.environ.setdefault("MUJOCO_GL", "egl")
# worldzoo.gemm keeps its per-machine backend choice under the cache dir: tests keep theirs in
# a private one, not in the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="worldzoo-test-cache-")
