"""Locations the tests share, the same whichever folder under tests/ a test file sits in."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
PUBLISHED = DATA / "published"
