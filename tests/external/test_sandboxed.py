"""SandboxedExternalEval and the inspect wrapper (docs/architecture.md, "External evals").

Fast: inspect's JSON log mapped to samples (per-sample scores, aggregate-only, failed eval), the
dataset and command the wrapper writes, the image tag's dependence on the recipe, container limits,
and the in-container relay to the gateway's unix socket (run on the host). Slow (docker): the image,
built once per session and then cached by its recipe hash; an inspect run in its container against
the gateway (a fake provider: no model), what the container can reach, and teardown on timeout,
SIGINT and SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from conftest import FakeProvider

from engine.config.compose import compose_task
from engine.config.errors import ConfigError
from engine.config.schema import Experiment, ExternalConfig, HarnessConfig, ModelConfig, TrackingConfig
from engine.config.suites import TaskRun
from engine.external import inspect_wrapper, sandboxed
from engine.external.base import ExternalItem, OutputError, WrapperContext
from engine.external.gateway import ModelGateway
from engine.external.images import DOCKERFILE, ImageRecipe, recipe_from_lock, tag_for
from engine.external.run import INNER_BASE_URL, run_external
from engine.sandbox.docker_backend import owner_tag

REPO = Path(__file__).resolve().parents[2]


def _ctx(tmp_path: Path, args: dict | None = None) -> WrapperContext:
    task = compose_task("inspect_mmlu")
    ext = ExternalConfig(wrapper="inspect", args={**task.external.args, **(args or {})})
    items = [ExternalItem(id="q1", query="2+2?", choices=["3", "4"], gold=1, cluster="math"),
             ExternalItem(id="q2", query="Capital of France?", choices=["Paris", "Rome"], gold=0, cluster="geo")]
    return WrapperContext(task=task, external=ext, exp=Experiment(model=ModelConfig(name="m")), base_url=INNER_BASE_URL,
                          model_name="m", model_dir=None, rows=[{}, {}], workdir=tmp_path, items=items,
                          inner_workdir="/work")


def _sample(iid: str, value: str, answer: str) -> dict:
    messages = [{"role": "user", "content": f"Answer {iid}"}, {"role": "assistant", "content": f"ANSWER: {answer}"}]
    return {"id": iid, "input": f"Question {iid}", "choices": ["3", "4"], "target": "B", "messages": messages,
            "output": {"completion": f"ANSWER: {answer}"}, "scores": {"choice": {"value": value, "answer": answer}}}


def _write_log(tmp_path: Path, **log) -> None:
    (tmp_path / "logs").mkdir(exist_ok=True)
    base = {"status": "success", "results": {"total_samples": 2, "completed_samples": 2, "scores": [
        {"name": "choice", "metrics": {"accuracy": {"value": 0.5}, "stderr": {"value": 0.5}}}]}}
    (tmp_path / "logs" / "2026-01-01_task.json").write_text(json.dumps({**base, **log}))


def test_inspect_samples_become_per_sample_scores_and_their_requests(tmp_path: Path) -> None:
    _write_log(tmp_path, samples=[_sample("q1", "C", "B"), _sample("q2", "I", "A")])
    out = inspect_wrapper.InspectWrapper().parse(_ctx(tmp_path))
    assert out.aggregate == {"acc": 0.5} and out.n == 2  # renamed choice -> acc; its stderr is not a score
    a, b = out.samples
    assert (a.instance_id, a.scores, a.gold, a.extracted, a.response) == ("q1", {"acc": 1.0}, 1, 1, "ANSWER: B")
    assert b.scores == {"acc": 0.0} and b.extracted == 0
    assert a.request_texts == ["[user] Answer q1"]  # how the gateway renders the chat request it served


def test_inspect_without_samples_is_aggregate_only_and_a_failed_eval_is_unreadable(tmp_path: Path) -> None:
    _write_log(tmp_path)
    out = inspect_wrapper.InspectWrapper().parse(_ctx(tmp_path))
    assert out.samples is None and out.aggregate == {"acc": 0.5} and out.n == 2
    _write_log(tmp_path, status="error", error={"message": "model refused the connection"})
    with pytest.raises(OutputError, match="status 'error': model refused the connection"):
        inspect_wrapper.InspectWrapper().parse(_ctx(tmp_path))
    _write_log(tmp_path, samples=[{**_sample("q1", "C", "B"), "scores": {"choice": {"value": {"x": 1}}}}])
    with pytest.raises(OutputError, match="not a scalar"):
        inspect_wrapper.InspectWrapper().parse(_ctx(tmp_path))


def test_inspect_command_uses_container_paths_and_writes_its_dataset(tmp_path: Path) -> None:
    argv, env = inspect_wrapper.InspectWrapper().command(_ctx(tmp_path, {"log_samples": False}))
    assert argv[:3] == ["inspect", "eval", "/work/task.py@evalbench_multiple_choice"]
    assert "data=/work/dataset.jsonl" in argv and "--no-log-samples" in argv
    assert argv[argv.index("--model") + 1] == "openai-api/evalbench/m"
    assert env["EVALBENCH_BASE_URL"] == INNER_BASE_URL
    rows = [json.loads(x) for x in (tmp_path / "dataset.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "q1", "input": "2+2?", "choices": ["3", "4"], "target": "B", "cluster": "math"}
    assert "multiple_choice()" in (tmp_path / "task.py").read_text()


def test_the_image_tag_follows_the_recipe_and_the_lock_pins_inspect() -> None:
    recipe = recipe_from_lock("inspect")
    assert f"inspect-ai=={inspect_wrapper.VERSION}" in recipe.requirements
    assert any(r.startswith("openai==") for r in recipe.requirements) and any(r.startswith("pip==") for r in recipe.requirements)
    tag = tag_for(recipe, "sha256:base")
    assert tag.startswith("evalbench-ext-inspect:") and tag == tag_for(recipe, "sha256:base")
    other = ImageRecipe(wrapper="inspect", requirements=(*recipe.requirements[:-1], "zipp==0.0.1"))
    assert len({tag, tag_for(other, "sha256:base"), tag_for(recipe, "sha256:rebuilt-base")}) == 3
    assert "network" not in DOCKERFILE.lower()  # the build has no network at all (network_mode=none)


def test_container_limits_come_from_args_and_refuse_network() -> None:
    assert sandboxed.container_limits({"limits": {"cpus": 0.5}}).cpus == 0.5
    assert sandboxed.container_limits({}).memory_mb == sandboxed.DEFAULT_LIMITS["memory_mb"]
    with pytest.raises(ConfigError, match="not a valid set of container limits"):
        sandboxed.container_limits({"limits": {"memory": 10}})
    with pytest.raises(ConfigError, match="reaches only the model gateway"):
        sandboxed.container_limits({"limits": {"network": True}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_container_entry_relays_loopback_to_the_gateway_socket(tmp_path: Path) -> None:
    """The relay itself, run on the host: a client of 127.0.0.1:<port> talks to the unix socket's server."""
    sock = str(tmp_path / "gw.sock")

    async def main() -> subprocess.CompletedProcess[str]:
        async def models(_: web.Request) -> web.Response:
            return web.json_response({"data": [{"id": "relayed"}]})

        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, sock).start()
        port = _free_port()
        client = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/v1/models', "
                  "timeout=10).read().decode())")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(sandboxed.ENTRY_SOURCE), "--socket", sock, "--port", str(port), "--",
                sys.executable, "-c", client, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await runner.cleanup()
        return subprocess.CompletedProcess([], proc.returncode or 0, out.decode(), err.decode())

    done = asyncio.run(main())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"][0]["id"] == "relayed"


# -- docker ------------------------------------------------------------------------------------------
# The docker tests share one worker under pytest-xdist (`--dist loadgroup`): one builds the image on a fresh
# machine while the other goes on with the rest of the suite.
DOCKER = pytest.mark.xdist_group("inspect_image")

def _docker_skip_reason() -> str | None:
    from engine.sandbox.docker_backend import client, docker_unavailable_reason

    why = docker_unavailable_reason()
    if why:
        return why
    try:
        client().images.get("evalbench-sandbox:latest")
    except Exception:  # noqa: BLE001
        return "no evalbench-sandbox:latest base image (bash scripts/ci/setup_sandboxes.sh)"
    return None


@pytest.fixture(scope="session")
def inspect_image() -> str:
    """The inspect image: built once on a fresh machine (minutes), then found by its recipe hash."""
    if (why := _docker_skip_reason()) is not None:
        pytest.skip(why)
    from engine.external.images import ensure_image

    return ensure_image(recipe_from_lock("inspect"))


def _labelled(owner: str | None = None) -> list[str]:
    from engine.sandbox.docker_backend import LABEL, OWNER_LABEL, client

    filters = [f"{LABEL}", "evalbench.pool=external:inspect"] + ([f"{OWNER_LABEL}={owner}"] if owner else [])
    return [c.id for c in client().containers.list(all=True, filters={"label": filters})]


@pytest.mark.slow
@DOCKER
def test_inspect_runs_in_its_container_and_its_samples_land_as_instances(tmp_path, make_core, inspect_image) -> None:
    exp = Experiment(model=ModelConfig(name="fake-model"), limit=3, output_dir=str(tmp_path / "runs"),
                     tracking=TrackingConfig(mlflow=False), progress=False, harness=HarnessConfig(concurrency=4))
    run = TaskRun(spec="inspect_mmlu", task=compose_task("inspect_mmlu"))
    core = make_core(FakeProvider())
    result = asyncio.run(run_external(run, exp, core))
    assert result.status == "finished", result.extra
    assert result.extra["image"] == inspect_image and result.extra["unmatched_requests"] == 0
    assert result.extra["gateway_requests"] == 3 and core.model_calls >= 1
    assert len(result.instances) == 3 and all(set(r.scores) == {"acc"} for r in result.instances)
    rec = result.instances[0]
    assert rec.output_text.startswith("echo: ") and isinstance(rec.gold, int) and rec.choices and len(rec.choices) == 4
    assert [s.type for s in rec.trajectory] == ["model"] and rec.trajectory[0].content["cache_key"]
    assert _labelled(owner_tag()) == []  # this process's container is gone (other tests' may be listed)


@pytest.mark.slow
@DOCKER
def test_the_container_reaches_the_gateway_and_nothing_else(tmp_path, make_core, inspect_image) -> None:
    # A server listening on the host's own non-loopback address: reachable from the host, not from the container.
    host_ip = next((a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
                    if "." in a and not a.startswith("127.")), None)
    if host_ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    listener = socket.create_server((host_ip, 0))
    host_port = listener.getsockname()[1]
    probe = f"""
import json, socket, urllib.request
out = {{"interfaces": sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])}}
out["gateway"] = json.loads(urllib.request.urlopen("{INNER_BASE_URL}/models", timeout=10).read())["data"][0]["id"]
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "connected"
    except OSError as err:
        return type(err).__name__
out["host_ip"] = connect("{host_ip}", {host_port})
out["gateway_tcp_port_on_loopback"] = connect("127.0.0.1", PORT)
try:
    socket.getaddrinfo("pypi.org", 443)
    out["dns"] = "resolved"
except OSError as err:
    out["dns"] = type(err).__name__
print(json.dumps(out))
"""

    async def main() -> tuple[int | None, bytes, bytes]:
        work, gw_dir = sandboxed.prepare_dirs(tmp_path / "box")
        async with ModelGateway(make_core(FakeProvider()), unix_path=str(gw_dir / sandboxed.SOCKET_NAME)) as gw:
            container = sandboxed.ExternalContainer(
                inspect_image, ["python3", "-c", probe.replace("PORT", str(gw.port))], {}, work, gw_dir,
                sandboxed.container_limits({}), "inspect")
            return await sandboxed.run_in_container(container, 60)

    (tmp_path / "box").mkdir()
    try:
        socket.create_connection((host_ip, host_port), timeout=3).close()  # the host reaches it
        code, out, err = asyncio.run(main())
    finally:
        listener.close()
    assert code == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["interfaces"] == ["lo"] and seen["gateway"] == "fake-model"
    assert seen["host_ip"] == "OSError"  # ENETUNREACH: no interface but loopback
    assert seen["gateway_tcp_port_on_loopback"] == "ConnectionRefusedError"  # the gateway's TCP port is the host's
    assert seen["dns"] == "gaierror"


TEARDOWN_SCRIPT = """
import asyncio, signal, sys
from pathlib import Path
from engine.external import sandboxed
from engine.sandbox.docker_backend import owner_tag
signal.signal(signal.SIGINT, signal.default_int_handler)  # a non-interactive parent may have left SIGINT ignored
work, gw = sandboxed.prepare_dirs(Path(sys.argv[1]))
c = sandboxed.ExternalContainer(sys.argv[2], ["sleep", "300"], {}, work, gw, sandboxed.container_limits({}), "inspect")
print(asyncio.run(sandboxed.run_in_container(c, float(sys.argv[3])))[0], flush=True)
"""


@pytest.mark.slow
@DOCKER
@pytest.mark.parametrize("how", ["timeout", "SIGTERM", "SIGINT"])
def test_the_container_is_removed_on_timeout_sigterm_and_sigint(tmp_path, inspect_image, how) -> None:
    (tmp_path / "box").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", TEARDOWN_SCRIPT, str(tmp_path / "box"), inspect_image,
                             "2" if how == "timeout" else "120"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    owner = f"{socket.gethostname()}:{proc.pid}"
    try:
        if how != "timeout":
            deadline = time.monotonic() + 60
            while not _labelled(owner) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            assert _labelled(owner), "the container did not start"
            proc.send_signal(getattr(signal, how))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    if how == "timeout":
        assert proc.returncode == 0 and out.strip() == "None", err  # None: timed out
    else:
        assert proc.returncode != 0
    assert _labelled(owner) == []


def test_docker_down_is_a_config_error_naming_the_fix(monkeypatch) -> None:
    from engine.external import images

    monkeypatch.setattr(images, "docker_unavailable_reason", lambda: "docker daemon not reachable: refused")
    with pytest.raises(ConfigError, match="setup_system.sh"):
        images.ensure_image(recipe_from_lock("inspect"))


@pytest.mark.slow
@DOCKER
def test_an_image_that_fails_to_build_is_a_config_error_and_leaves_no_image(monkeypatch, inspect_image) -> None:
    from engine.external import images

    def fake_download(recipe: ImageRecipe, wheels: Path) -> None:
        (wheels / "requirements.txt").write_text("\n".join(recipe.requirements) + "\n")
        (wheels / "pip-0-py3-none-any.whl").write_text("not a wheel")  # pip cannot run: the RUN step fails

    monkeypatch.setattr(images, "_download", fake_download)
    recipe = ImageRecipe(wrapper="broken_test", requirements=("pip==0",))
    tag = images.image_tag(recipe)
    with pytest.raises(ConfigError, match=f"{tag} of the external eval wrapper 'broken_test' failed to build"):
        images.ensure_image(recipe)
    assert not images.image_exists(tag)


def test_inspect_true_prints_the_image_the_limits_and_the_command_in_the_container(tmp_path, monkeypatch) -> None:
    from engine.external import run as external_run

    monkeypatch.setattr(external_run, "image_tag", lambda recipe: "evalbench-ext-inspect:0123456789ab")
    monkeypatch.setattr(external_run, "image_exists", lambda tag: False)
    rows = tmp_path / "mmlu.jsonl"  # three MMLU-shaped rows: the wheel's 14,042 take seconds to load
    rows.write_text("".join(json.dumps({"question": f"Q{i}?", "answer_a": "a", "answer_b": "b", "answer_c": "c",
                                        "answer_d": "d", "correct_answer": "B", "topic": "t"}) + "\n" for i in range(3)))
    task = compose_task("inspect_mmlu")
    task = task.model_copy(update={"data": task.data.model_copy(update={"data_files": str(rows)})})
    exp = Experiment(model=ModelConfig(name="fake-model", provider="litellm", api_base="http://127.0.0.1:9"), limit=2)
    text = external_run.external_command(TaskRun(spec="inspect_mmlu", task=task), exp)
    assert "[image] evalbench-ext-inspect:0123456789ab (not built yet: built on the first run)" in text
    assert "network none" in text and "2048 MB" in text and "2 instances" in text
    assert "EVALBENCH_BASE_URL=http://127.0.0.1:8765/v1" in text and "inspect eval /work/task.py@" in text
