"""shifter_site.jsonread (the step path's JSON reader without the `json` package) reads what
json writes, as json.loads does, and refuses what json.loads refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from shifter_site import jsonread

values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                      lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
                      max_leaves=30)


@given(value=values, indent=st.sampled_from([None, 1]))
def test_reads_what_json_writes(value, indent):
    text = json.dumps(value, indent=indent)
    assert jsonread.loads(f" \n{text}\t\n") == json.loads(text)


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', "[1,]", "{'a': 1}", '"\x01"', "nan", "01"])
def test_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsonread.loads(text)


def test_importing_it_imports_neither_json_nor_re():
    code = "import sys; import shifter_site.jsonread; print(sorted({'json', 're', 'enum'} & set(sys.modules)))"
    repo = str(Path(__file__).resolve().parent.parent.parent)
    proc = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {repo!r}); {code}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
