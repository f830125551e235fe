"""Test helpers shared across folders (writers of dataset files that follow the published formats)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))
