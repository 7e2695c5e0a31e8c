"""`sluice diff OLD NEW` (SPEC section 1): the plan a reload would apply, one line per change."""

import subprocess
import textwrap

from conftest import SLUICE_BIN

OLD = """\
listen: 127.0.0.1:18500
upstreams:
  api:
    targets: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }]
  legacy: [127.0.0.1:9100]
routes:
  - { name: health, match: { path_exact: /healthz }, respond: { status: 200, body: ok } }
  - { name: old, match: { path: /old }, upstream: legacy }
  - { name: api, match: { path: /api }, upstream: api }
"""

NEW = """\
listen: 127.0.0.1:18500
listeners:
  - { name: internal, listen: 127.0.0.1:18501 }
upstreams:
  api:
    targets: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 5 }, 127.0.0.1:9003]
    timeouts: { request: 5s }
  v2: [127.0.0.1:9200]
routes:
  - { name: api, match: { path: /api }, upstream: v2 }
  - { name: health, match: { path_exact: /healthz }, respond: { status: 200, body: ok } }
"""


def run_diff(tmp_path, old, new):
    (tmp_path / "old.yaml").write_text(textwrap.dedent(old))
    (tmp_path / "new.yaml").write_text(textwrap.dedent(new))
    return subprocess.run([SLUICE_BIN, "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")],
                          capture_output=True, text=True, timeout=30)


def test_diff_lists_every_added_removed_and_modified_part(tmp_path):
    result = run_diff(tmp_path, OLD, NEW)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = {
        "+ listener internal (127.0.0.1:18501)",
        "- upstream legacy (1 targets)",
        "+ upstream v2 (1 targets)",
        "~ upstream api target 127.0.0.1:9002: weight 3 -> 5",
        "+ upstream api target 127.0.0.1:9003 (weight 1)",
        "- route old (was #2)",
        "~ route api: upstream api -> upstream v2",
        "~ route api: position #3 -> #1",
        "~ route health: position #1 -> #2",
    }
    assert expected <= set(lines), lines
    assert any(line.startswith("~ upstream api: ") and "timeouts=1000ms/30000ms" in line
               and "-> " in line for line in lines), lines
    assert len(lines) == len(expected) + 1, lines


def test_diff_of_identical_configs_says_no_changes(tmp_path):
    result = run_diff(tmp_path, OLD, OLD)
    assert (result.returncode, result.stdout) == (0, "no changes\n")


def test_diff_with_an_invalid_file_exits_2_with_its_errors(tmp_path):
    result = run_diff(tmp_path, OLD, NEW.replace("upstream: v2", "upstream: v3"))
    assert result.returncode == 2
    assert "new.yaml:" in result.stderr and "unknown upstream 'v3'" in result.stderr
