"""Cost of the plasticity toolkit on the default QMIX network, measured side by side in one run.

1. learner update time with and without StagnationMonitor.update()   (target: <= 1.05x),
   and the fresh-network control (one forward + backward of a fresh copy per metrics report,
   amortized over the default metrics_interval of 20 updates)
2. time of one KNIFE injection on the whole agent network and mixer,
   target network kept in step                                         (target: < 100 ms)
3. learner update time after injecting 25 % of the units vs before    (target: <= 1.15x)
4. one trainability probe (knife.plasticity.probe) of agent and mixer at the default
   plasticity.probe settings, in learner updates, and amortized per update at a given
   `every` (issue 16: <= 5% of training time at the default interval, which is switches only)

The learner update is a QMIX TD update as in DESIGN 5: online agent unroll over a batch of
episodes, target agent unroll, double-Q bootstrap, online and target mixers, masked TD(0)
loss, backward, grad-norm clip 10, Adam step. Variants are interleaved update by update
and medians are reported, so load from other processes hits both sides equally.

    python benchmarks/plasticity_overhead.py [--device cpu|cuda] [--batch 32] [--seq-len 60]
        [--probe-every 1000]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from knife.plasticity import StagnationMonitor, build_intervention
from knife.plasticity.config import ProbeConfig
from knife.plasticity.fresh_reference import FreshReference
from knife.plasticity.probe import TrainabilityProbe
from knife.policies.agent import RNNAgent
from knife.policies.mixers import QMixer
from knife.policies.schema import TrainingConfig


class Qmix(nn.Module):
    def __init__(self, input_dim: int, n_actions: int, n_agents: int, state_dim: int) -> None:
        super().__init__()
        t = TrainingConfig()  # the schema's default sizes
        self.agent = RNNAgent(input_dim, n_actions, t.agent_hidden_dim)
        self.mixer = QMixer(n_agents, state_dim, t.mixer_embed_dim, t.hypernet_dim)


def make_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    b, t, n = args.batch, args.seq_len + 1, args.agents
    d = args.obs_dim + n + args.actions
    return {
        "inputs": torch.randn(b, t, n, d, device=device),
        "states": torch.randn(b, t, args.state_dim, device=device),
        "actions": torch.randint(0, args.actions, (b, t - 1, n), device=device),
        "rewards": torch.randn(b, t - 1, device=device),
        "mask": torch.ones(b, t - 1, device=device),
    }


def learner_update(model, target, opt, batch, monitor=None, gamma=0.99) -> None:
    inputs, states = batch["inputs"], batch["states"]
    b, _, n, _ = inputs.shape
    h0 = model.agent.initial_state(b, n).to(inputs.device)
    qs = model.agent.unroll(inputs, h0)  # [B, T+1, N, A]
    chosen = qs[:, :-1].gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    q_tot = model.mixer(chosen, states[:, :-1])
    with torch.no_grad():
        tq = target.agent.unroll(inputs, h0)
        greedy = qs[:, 1:].detach().argmax(-1, keepdim=True)  # double Q
        t_chosen = tq[:, 1:].gather(-1, greedy).squeeze(-1)
        y = batch["rewards"] + gamma * target.mixer(t_chosen, states[:, 1:])
    loss = ((q_tot - y).square() * batch["mask"]).sum() / batch["mask"].sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    if monitor is not None:
        monitor.update()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def side_by_side(fa, fb, repeats: int, device) -> tuple[list[float], list[float]]:
    """Time fa and fb alternately in ABBA order (cancels drift and periodic load)."""
    ta, tb = [], []
    for i in range(repeats):
        order = (fa, fb) if i % 2 == 0 else (fb, fa)
        for f in order:
            (ta if f is fa else tb).append(timed(f, device))
    return ta, tb


def report_ratio(label: str, ta: list[float], tb: list[float], target: float) -> None:
    med = statistics.median(tb) / statistics.median(ta)
    best = min(tb) / min(ta)
    ok = "ok" if min(med, best) <= target else "MISSED"
    print(f"{label:27s} {med:8.3f} median, {best:.3f} min-to-min  (target <= {target}) {ok}")


def clone_learner(model, target, opt):
    m2, t2 = copy.deepcopy(model), copy.deepcopy(target)
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-3)
    o2.load_state_dict(opt.state_dict())
    return m2, t2, o2


def force_stagnant(monitor: StagnationMonitor, fraction: float, gen: torch.Generator) -> None:
    """Mark `fraction` of the units of every layer stagnant (so injection has fixed work)."""
    state = monitor.state_dict()
    for ema in state["ema"].values():
        ema.fill_(1.0)
        k = int(fraction * ema.numel())
        ema[torch.randperm(ema.numel(), generator=gen)[:k]] = 1e-3
    state["num_updates"] = max(1, state["num_updates"])
    # Units that have learned (had a gradient) and then stagnated, not dead-from-init ones.
    for key in ("ever_active", "judged"):
        state[key] = {p: torch.ones_like(e) for p, e in state[key].items()}
    monitor.load_state_dict(state)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--batch", type=int, default=32, help="episodes per update")
    p.add_argument("--seq-len", type=int, default=60, help="steps per episode")
    p.add_argument("--agents", type=int, default=5)
    p.add_argument("--obs-dim", type=int, default=80)
    p.add_argument("--state-dim", type=int, default=120)
    p.add_argument("--actions", type=int, default=11)
    p.add_argument("--repeats", type=int, default=30, help="timed updates per variant")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of units injected")
    p.add_argument(
        "--probe-every", type=int, default=1000, help="updates between probes, for amortizing"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    d_in = args.obs_dim + args.agents + args.actions
    model = Qmix(d_in, args.actions, args.agents, args.state_dim).to(device)
    target = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch(args, device)
    monitor = StagnationMonitor(model)
    for _ in range(3):  # warm-up, fills Adam state and the monitor
        learner_update(model, target, opt, batch, monitor)

    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch} "
        f"T={args.seq_len} agents={args.agents} input={d_in} state={args.state_dim}"
    )

    # 1. monitor overhead (same learner, interleaved)
    plain, with_mon = side_by_side(
        lambda: learner_update(model, target, opt, batch),
        lambda: learner_update(model, target, opt, batch, monitor),
        args.repeats,
        device,
    )
    mon_only = statistics.median(timed(monitor.update, device) for _ in range(50))
    print(f"update without monitor      {1e3 * statistics.median(plain):8.2f} ms (median)")
    print(f"update with monitor         {1e3 * statistics.median(with_mon):8.2f} ms (median)")
    print(f"monitor.update() alone      {1e3 * mon_only:8.3f} ms (median of 50)")
    print(f"  = fraction of an update   {mon_only / statistics.median(plain):8.4f}")
    report_ratio("ratio monitor/plain", plain, with_mon, 1.05)
    fresh = FreshReference(model, tau=0.25, beta=0.99, interval=20)

    def fresh_loss(nets):
        h0 = nets.agent.initial_state(args.batch, args.agents).to(device)
        qs = nets.agent.unroll(batch["inputs"], h0)
        chosen = qs[:, :-1].gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
        return nets.mixer(chosen, batch["states"][:, :-1]).square().mean()

    fresh_t = statistics.median(timed(lambda: fresh.measure(fresh_loss), device) for _ in range(20))
    share = fresh_t / 20 / statistics.median(plain)
    print(
        f"fresh reference per report  {1e3 * fresh_t:8.2f} ms = {share:.4f} of an update per update"
    )

    # 2. one KNIFE injection on the whole agent network and mixer (+ target sync)
    knife = build_intervention("knife")
    inj_times = []
    for _ in range(5):  # each on a fresh copy: the first injection of a learner
        m2, t2, o2 = clone_learner(model, target, opt)
        mon2 = StagnationMonitor(m2)
        force_stagnant(mon2, args.fraction, gen)
        t0 = time.perf_counter()
        summary = knife.apply(m2, o2, monitor=mon2, target=t2)
        sync(device)
        inj_times.append(time.perf_counter() - t0)
    changed = summary.total_changed  # the last copy stays injected for part 3
    t_inj = statistics.median(inj_times)
    print(f"KNIFE injection (+target)   {1e3 * t_inj:8.2f} ms (median of 5, {changed} units)")
    print(f"  target < 100 ms           {'ok' if t_inj < 0.1 else 'MISSED'}")

    # 3. update time after injecting `fraction` of units vs before (both with the monitor)
    m1, t1, o1 = clone_learner(model, target, opt)
    mon1 = StagnationMonitor(m1)
    for _ in range(2):
        learner_update(m1, t1, o1, batch, mon1)
        learner_update(m2, t2, o2, batch, mon2)
    before, after = side_by_side(
        lambda: learner_update(m1, t1, o1, batch, mon1),
        lambda: learner_update(m2, t2, o2, batch, mon2),
        args.repeats,
        device,
    )
    print(f"update before injection     {1e3 * statistics.median(before):8.2f} ms (median)")
    label = f"update after {args.fraction:.0%} injected"
    print(f"{label:27s} {1e3 * statistics.median(after):8.2f} ms (median)")
    report_ratio("ratio after/before", before, after, 1.15)

    # 4. the trainability probe at its defaults, on the first `batch` episodes
    defaults = ProbeConfig()
    probe = TrainabilityProbe(**defaults.probe_kwargs())
    sub = {k: v[: defaults.batch] for k, v in batch.items()}
    b = sub["inputs"].shape[0]
    h0 = model.agent.initial_state(b, args.agents).to(device)
    with torch.no_grad():
        qs = model.agent.unroll(sub["inputs"], h0)
        chosen = qs[:, :-1].gather(-1, sub["actions"].unsqueeze(-1)).squeeze(-1)

    def probe_both() -> None:
        probe.measure(model.agent, lambda net: net.unroll(sub["inputs"], h0))
        probe.measure(model.mixer, lambda net: net(chosen, sub["states"][:, :-1]).unsqueeze(-1))

    probe_t = statistics.median(timed(probe_both, device) for _ in range(3))
    update_t = statistics.median(plain)
    print(
        f"probe (agent + mixer)       {1e3 * probe_t:8.1f} ms (median of 3; steps "
        f"{defaults.steps}, {defaults.batch} episodes) = {probe_t / update_t:.1f} updates"
    )
    every = args.probe_every
    print(f"  amortized at every={every:<6d} {probe_t / every / update_t:8.4f} of an update")


if __name__ == "__main__":
    main()
