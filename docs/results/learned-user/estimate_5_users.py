"""Per-user cost of the private stage on 5 test users (the bench's first 5: their adapters are reused), and
whether the adapters move the label distribution at all (no target is read)."""
import sys, time, torch
torch.set_num_threads(1)
import numpy as np
from pllm.eval.bench import BenchRunner
from pllm.eval.grid import load_bench_config
from pllm.eval.runner import learned_stage, private_stage
from pllm.eval.methods import method_from_name
from pllm.pipeline import Personalizer
from pllm.prompting.profile import ItemCrowd
n = int(sys.argv[1])
r = BenchRunner(load_bench_config("benchmarks/grids/learned-user.yaml"), "/tmp/wt-ftuser-work/est-bench")
task = [t for t in r.load_tasks() if t.name == "movielens-rating"][0]
gen = r.generator("hf")
mc = method_from_name("ft+user+stats+crowd/median", max_prompt_tokens=512, style="demonstrations")
t0 = time.time()
stage = learned_stage(task.spec, gen, mc, train=task.learn, max_pairs=2400, train_source={"questions": task.learn_source})
print("first stage", round(time.time() - t0, 1), stage.info["adapter_trained_now"], stage.info["adapter_data_hash"], flush=True)
t1 = time.time()
qs = task.questions[:n]
pg, info = private_stage(task.spec, stage, mc, questions=qs, train=task.learn,
                         progress=lambda l, d, t: print(l, d, t, round(time.time() - t1, 1), flush=True))
print({k: v for k, v in info.items() if k.startswith("private")}, flush=True)
print("private total", round(time.time() - t1, 1), flush=True)
crowd = ItemCrowd(task.spec).fit(task.learn)
a = Personalizer(task.spec, stage.generator, mc, crowd=crowd).predict(qs)
b = Personalizer(task.spec, pg, mc, crowd=crowd).predict(qs)
for x, y in zip(a, b):
    px = np.exp(list(x.label_scores.values())); px /= px.sum()
    py = np.exp(list(y.label_scores.values())); py /= py.sum()
    print(x.id, x.prediction, y.prediction, "L1 of label distributions", round(float(abs(px - py).sum()), 3))
