"""The GPU record: every .tflite in a folder timed on the GPU (FP16 allowed, and told to compute in float32) and
on all of the CPU's cores, interleaved, every GPU run's outputs checked against the CPU's.  Device side: no
TensorFlow, what scripts/gpu_loan.sh runs on a lent GPU machine.

    python -m benchmarks.gpu_record FOLDER OUT [--rounds 3] [--num_runs 50]

Writes OUT/gpu_record.json and OUT/gpu_record.md: per file, the median of the per-round medians (min-max over
rounds) in each setting, and each file's ratio to the file named ``resnet50*`` in the same precision.
"""

import argparse
import glob
import json
import os
import statistics

from benchmarks.bench import benchmark, machine_description, spread
from benchmarks.runtime import RuntimeUnavailable, gpu_is_emulated
from invo_base.plumbing import json_text, write_atomic

# (setting, benchmark options): the GPU as a phone's runs it (FP16 allowed), the GPU in float32, every CPU core.
SETTINGS = (
    ("gpu", {"runtime": "litert-compiled", "use_gpu": True, "require_full_delegation": True}),
    ("gpu-fp32", {"runtime": "litert-compiled", "use_gpu": True, "require_full_delegation": True,
                  "gpu_precision_loss_allowed": False}),
    ("cpu-all-cores", {"runtime": "litert", "num_threads": os.cpu_count() or 1}),
)


def record(files, rounds=3, num_runs=50, settings=SETTINGS):
    """{file: {setting: {"rounds": [medians], "spread": spread, "ops": n}}}, timed round by round over every
    file and setting; a GPU run whose outputs the CPU contradicts is an error, not a figure."""
    times = {}
    for _ in range(rounds):
        for setting, options in settings:
            for path in files:
                r = benchmark(path, warmup_runs=3, num_runs=num_runs, min_secs=0, progress=False, **options)
                if r["wrong_numbers"]:
                    raise RuntimeUnavailable(r["wrong_numbers"])
                entry = times.setdefault(os.path.basename(path), {}).setdefault(setting, {"rounds": []})
                entry["rounds"].append(r["median_ms"])
                entry.update(accelerator=r["accelerator"], init_ms=r["init_ms"], first_ms=r["first_ms"],
                             check=r.get("accelerator_check"))
    for by_setting in times.values():
        for entry in by_setting.values():
            entry["spread"] = spread(entry["rounds"])
    return times


def baseline_of(name, names):
    """The ResNet-50 file of ``name``'s precision (the part after the last '_'), or None."""
    suffix = name.rsplit("_", 1)[-1]
    return next((n for n in names if n.startswith("resnet50") and n.endswith(suffix)), None)


def markdown(times, info):
    settings = [s for s, _ in SETTINGS]
    lines = [f"{info['machine']}; GPU: {info['gpu']}; {info['date']}; median of {info['rounds']} interleaved rounds "
             f"of {info['num_runs']} runs (min-max over rounds), ms. gpu: FP16 allowed (a phone's default); "
             "gpu-fp32: told to compute in float32; every GPU run checked against the CPU.", "",
             "| file | " + " | ".join(settings) + " | " + " | ".join(f"{s} / resnet50" for s in settings) + " |",
             "|---|" + "---|" * (2 * len(settings))]
    names = sorted(times)
    for name in names:
        base = baseline_of(name, names)
        cells = [f"{times[name][s]['spread']['median']:.2f} ({times[name][s]['spread']['min']:.2f}-"
                 f"{times[name][s]['spread']['max']:.2f})" for s in settings]
        for s in settings:
            if base is None:
                cells.append("-")
                continue
            per_round = [a / b for a, b in zip(times[name][s]["rounds"], times[base][s]["rounds"])]
            cells.append(f"{statistics.median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import time

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--num_runs", type=int, default=50)
    p.add_argument("--gpu", default=os.environ.get("INVO_GPU_NAME", "the lent GPU"), help="The GPU's name.")
    a = p.parse_args(argv)
    files = sorted(glob.glob(os.path.join(a.folder, "*.tflite")))
    if not files:
        raise SystemExit(f"error: no .tflite files in {a.folder}")
    times = record(files, a.rounds, a.num_runs)
    gpu = a.gpu + (" (SwiftShader: emulated, its timings are not GPU speed)" if gpu_is_emulated() else "")
    info = {"machine": machine_description(), "gpu": gpu, "date": time.strftime("%Y-%m-%d"), "rounds": a.rounds,
            "num_runs": a.num_runs}
    os.makedirs(a.out, exist_ok=True)
    write_atomic(os.path.join(a.out, "gpu_record.json"), json_text({"info": info, "files": times}))
    md = markdown(times, info)
    write_atomic(os.path.join(a.out, "gpu_record.md"), md)
    print(md)
    print(json.dumps({"files": len(files)}))


if __name__ == "__main__":
    main()
