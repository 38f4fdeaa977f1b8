"""GPU check of dinov2.features: CUDA extraction and exact k-NN against the CPU path.

Run on a CUDA machine after merging: ``PYTHONPATH=$PWD python notes/gpu_check_features.py``. Not run on the
arch-eval branch: the device machine copies /work/main.
"""

import torch

from dinov2.features import exact_knn, extract, extract_features
from tests.eval.test_utils import CountingModel, ToyDataset
from tests.features.test_extract import TokensModel
from tests.features.test_knn import _brute_force, _tied_problem

dev = torch.device("cuda")
ds = ToyDataset(37, unlabelled={5})
cpu = extract(TokensModel(), ds, batch_size=8, progress=False)
gpu = extract(TokensModel().to(dev), ds, batch_size=8, progress=False)
assert gpu.outputs["cls"].device.type == "cuda"
for k in cpu.outputs:
    torch.testing.assert_close(gpu.outputs[k].cpu(), cpu.outputs[k], rtol=1e-4, atol=1e-4)
assert gpu.labels.cpu().tolist() == cpu.labels.tolist()
features, _ = extract_features(CountingModel().to(dev), ds, 8, 2, gather_on_cpu=True, progress=False)
assert features.device.type == "cpu"
q, db = _tied_problem()
s, i = exact_knn(q.to(dev), db.to(dev), 7)
rs, ri = _brute_force(q, db, 7)
assert torch.equal(i.cpu(), ri), "cuda ties"
big_q, big_db = torch.randn(3000, 256, device=dev), torch.randn(50000, 256, device=dev)
s1, i1 = exact_knn(big_q, big_db, 20, normalize=True)
s2, i2 = exact_knn(big_q, big_db, 20, normalize=True, chunk_size=128)
assert torch.equal(i1, i2)
print("GPU checks OK", torch.cuda.get_device_name())
