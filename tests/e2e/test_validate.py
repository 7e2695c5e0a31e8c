"""`sluice validate -c FILE` (SPEC section 1): exit 0 for a valid config, 2 for an invalid one
with every error on its own line as FILE:LINE:COL: message."""

import re
import subprocess
import textwrap

from conftest import SLUICE_BIN

BROKEN = textwrap.dedent("""\
    listen: 127.0.0.1:18080
    workerz: 2
    upstreams:
      api: [127.0.0.1:9001]
    routes:
      - match: { pth: /x }
        upstream: api
      - match: { path: /y }
        upstream: apii
      - match: { path: /z }
        upstream: api
        timeout: 5parsecs
      - match: { path_regex: "([" }
        upstream: api
    """)

GOOD = textwrap.dedent("""\
    listen: 127.0.0.1:18080
    workers: 1
    upstreams:
      api:
        targets: [127.0.0.1:9001, { address: 127.0.0.1:9002, weight: 3 }]
        timeouts: { connect: 1s, request: 30s, idle: 60s }
    routes:
      - name: hello
        match: { path_exact: /hello }
        respond: { status: 200, body: hi }
      - match: { path: /api, methods: [GET] }
        upstream: api
        rewrite: { strip_prefix: true }
    """)


def validate(path):
    return subprocess.run([SLUICE_BIN, "validate", "-c", str(path)], capture_output=True, text=True, timeout=30)


def diagnostics(path, output):
    """{(line, col): message} for every FILE:LINE:COL: line in the output."""
    found = {}
    pattern = re.compile(r"^" + re.escape(str(path)) + r":(\d+):(\d+): (.+)$")
    for line in output.splitlines():
        m = pattern.match(line)
        if m:
            found[(int(m.group(1)), int(m.group(2)))] = m.group(3)
    return found


def test_broken_config_reports_every_error_with_file_line_col_and_exits_2(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = validate(path)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = diagnostics(path, result.stdout + result.stderr)

    assert (2, 1) in errors and "workerz" in errors[(2, 1)] and "did you mean 'workers'" in errors[(2, 1)]
    pth = [m for (line, _), m in errors.items() if line == 6]
    assert pth and "pth" in pth[0] and "did you mean 'path'" in pth[0], errors
    apii = [m for (line, _), m in errors.items() if line == 9]
    assert apii and "unknown upstream 'apii'" in apii[0], errors
    assert errors.get((9, 15), "").startswith("unknown upstream"), errors
    assert any(line == 12 and "5parsecs" in m for (line, _), m in errors.items()), errors
    assert any(line == 13 for (line, _) in errors), f"the bad regex is not reported: {errors}"
    assert len(errors) >= 5


def test_each_error_is_on_its_own_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = validate(path)
    lines = [l for l in (result.stdout + result.stderr).splitlines() if l.startswith(f"{path}:")]
    located = [l for l in lines if re.match(re.escape(str(path)) + r":\d+:\d+: \S", l)]
    assert len(located) >= 5
    for line in located:
        assert line.count(f"{path}:") == 1, line


def test_valid_config_exits_0(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert diagnostics(path, result.stdout + result.stderr) == {}


def test_warnings_are_reported_with_location_but_the_config_is_valid(tmp_path):
    path = tmp_path / "warn.yaml"
    path.write_text(textwrap.dedent("""\
        listen: 127.0.0.1:18080
        upstreams:
          api: [127.0.0.1:9001]
          unused: [127.0.0.1:9002]
        routes:
          - match: { path: / }
            upstream: api
          - match: { path: /x }
            upstream: api
        """))
    result = validate(path)
    assert result.returncode == 0
    found = diagnostics(path, result.stdout + result.stderr)
    assert any(line == 4 and "unused" in m for (line, _), m in found.items()), found
    assert any(line == 8 and "never match" in m for (line, _), m in found.items()), found


def test_missing_config_file_exits_2_naming_the_file(tmp_path):
    path = tmp_path / "absent.yaml"
    result = validate(path)
    assert result.returncode == 2
    assert str(path) in result.stdout + result.stderr


def test_unset_environment_variable_is_a_validation_error(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text("listen: 127.0.0.1:18080\nupstreams:\n  api: [\"${SLUICE_TEST_SURELY_UNSET}:9001\"]\n"
                    "routes:\n  - { match: { path: / }, upstream: api }\n")
    result = validate(path)
    assert result.returncode == 2
    found = diagnostics(path, result.stdout + result.stderr)
    assert any(line == 3 and "SLUICE_TEST_SURELY_UNSET" in m for (line, _), m in found.items()), found


def test_run_with_an_invalid_config_exits_2(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = subprocess.run([SLUICE_BIN, "run", "-c", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "workerz" in result.stdout + result.stderr
