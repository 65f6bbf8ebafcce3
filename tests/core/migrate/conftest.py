import pytest

pytest.importorskip("libcst", reason='fulmen migrate needs libcst (pip install "fulmen[migrate]")')
