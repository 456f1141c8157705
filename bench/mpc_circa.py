"""Circa truncated-sign ReLU vs CrypTen's exact ReLU, per element, on real 2PC shares.

N values ~ N(0, 1) are shared by party 0; each method runs once untimed, then
``--repeats`` timed runs (median). Reported per element: seconds, rounds (per
layer), CrypTen bytes (send + receive) and bytes sent per party, plus the measured
error rate of the ReLU output against the exact ReLU of the encoded input (the
only faults are positives below 2**(k-16) zeroed, and |x| beyond the range).
Also times one secure square (the polynomial-activation cost).

    python bench/mpc_circa.py [--sizes 1e5 1e6 --repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpc.launcher import run_parties  # noqa: E402
from mpc_common import machine  # noqa: E402
from pi_opt.circa_faults import encode_fixed  # noqa: E402

#: (k dropped bits, l kept bits) settings; (0, 64) is the full-width protocol.
SETTINGS: list[tuple[int, int]] = [(0, 64), (4, 32), (4, 16), (12, 16), (12, 8), (16, 4)]


def _party(rank: int, job: dict[str, Any]) -> list[dict[str, Any]]:
    import crypten
    import crypten.communicator as comm

    from mpc.circa_sign import truncated_relu

    c = comm.get()
    out = []
    with crypten.no_grad():
        for n in job["sizes"]:
            values = torch.randn(n, generator=torch.Generator().manual_seed(n))
            x = crypten.cryptensor(values, src=0)
            methods: list[tuple[str, int | None, int | None, Any]] = [
                ("crypten_relu", None, None, lambda: x.relu()),
                ("square", None, None, lambda: x.square())]
            methods += [(f"circa_k{k}_l{l}", k, l, (lambda k=k, l=l: truncated_relu(x, k, l)))
                        for k, l in SETTINGS]
            for name, k, l, fn in methods:
                y = fn()  # warm-up, and the output checked below
                secs, rounds, nbytes = [], [], []
                for _ in range(job["repeats"]):
                    c.barrier()
                    c.reset_communication_stats()
                    t0 = time.perf_counter()
                    fn()
                    secs.append(time.perf_counter() - t0)
                    st = c.get_communication_stats()
                    rounds.append(int(st["rounds"]))
                    nbytes.append(int(st["bytes"]))
                got = y.reveal()
                rec: dict[str, Any] = {"method": name, "n": n, "k": k, "l": l,
                                       "seconds": statistics.median(secs), "all_seconds": secs,
                                       "rounds": int(statistics.median(rounds)),
                                       "crypten_bytes": int(statistics.median(nbytes))}
                if name != "square":
                    enc = encode_fixed(values)
                    wrong = got != enc * (enc >= 0)
                    rec.update(errors=int(wrong.sum()), error_rate=float(wrong.double().mean()),
                               max_abs_x_wrong=float(values[wrong].abs().max())
                               if wrong.any() else 0.0,
                               positives_zeroed=int((wrong & (values > 0) & (got == 0)).sum()))
                out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=(1e5, 1e6))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/mpc_circa.json")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes]
    t0 = time.time()
    job = {"sizes": sizes, "repeats": args.repeats}
    res = run_parties(_party, [job, job], timeout_s=1800)[0]
    out = {"bench": "mpc_circa", "command": "python " + " ".join(sys.argv),
           "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
           "machine": machine(), "provider": "TFP", "repeats": args.repeats,
           "wall_s": time.time() - t0, "runs": res}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print("| N | method | us/elem | rounds | CrypTen B/elem | B sent/party/elem | "
          "time vs ReLU | bytes vs ReLU | wrong outputs | max abs x wrong |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        base = next(r for r in res if r["n"] == n and r["method"] == "crypten_relu")
        for r in (r for r in res if r["n"] == n):
            err = (f"{r['errors']} ({100 * r['error_rate']:.2f}%)" if "errors" in r else "-")
            mx = f"{r['max_abs_x_wrong']:.4f}" if r.get("errors") else "-"
            print(f"| {n:.0e} | {r['method']} | {1e6 * r['seconds'] / n:.3f} | {r['rounds']} | "
                  f"{r['crypten_bytes'] / n:.2f} | {r['crypten_bytes'] / n / 2:.2f} | "
                  f"{base['seconds'] / r['seconds']:.2f}x | "
                  f"{base['crypten_bytes'] / r['crypten_bytes']:.2f}x | {err} | {mx} |")
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
