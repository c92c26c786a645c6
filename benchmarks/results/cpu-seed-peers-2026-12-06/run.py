from dataclasses import replace

from benchmarks import suite
from benchmarks.systems import SEED

p = suite.plan("cpu", quick=True)
p.configs = [replace(SEED, batch=512), replace(SEED, batch=32)]
p.ensembles = []
p.fit_at = ()
p.repeats = 11
p.user_step = []
p.digits_epochs = 0
p.torch_one_thread = False
r = suite.run_suite(p, "cpu", "/tmp/meas/seed512")
