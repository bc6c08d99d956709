import os

# torch's C++ store/gloo warnings come with native stack traces that bury
# fedsynth's one-line errors; keep only C++ errors.
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

from .cli import main  # noqa: E402

main(prog_name="fedsynth")
