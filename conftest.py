# Test helpers (tiny_models, the distributed workers) live in tests/; method folders keep their own
# tests beside their code (src/dress/methods/<name>/tests/) and import the helpers from here.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "tests"))
