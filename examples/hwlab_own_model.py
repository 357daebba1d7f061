"""Your own model through hwlab: build it from a `module:callable` spec, let the zoo train it with
the zoo recipe (cached, keyed by its source), save and reload its weights strictly, and stream a
DataLoader through `evaluate`.

    python examples/hwlab_own_model.py            # writes examples_own_model.py next to it

The same spec works on the command line:
    hwlab run hwlab.zoo --model examples_own_model:factory --dataset digits
    hwlab run hwlab.zoo --model examples_own_model:factory --weights own.pt --dataset digits
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from hwlab import zoo
from hwlab.data import load
from hwlab.models import load_weights, resolve
from hwlab.train import evaluate

MODULE = textwrap.dedent('''
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):                    # residual add, functional ReLU, BatchNorm
        def __init__(self, in_shape, num_classes):
            super().__init__()
            self.stem = nn.Conv2d(in_shape[0], 16, 3, padding=1)
            self.conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            self.head = nn.Linear(16 * (in_shape[1] // 2) * (in_shape[2] // 2), num_classes)

        def forward(self, x):
            h = self.stem(x).relu()
            h = F.relu(h + self.bn(self.conv(h)))
            return self.head(F.max_pool2d(h, 2).flatten(1))


    def factory(in_shape=(1, 28, 28), num_classes=10):
        return Net(in_shape, num_classes)
''')


def main() -> None:
    Path("examples_own_model.py").write_text(MODULE)  # a module in the current directory
    spec = "examples_own_model:factory"
    entry = zoo.entry(spec, "digits")  # trained once with the default zoo recipe, then cached
    print(f"{spec}: test accuracy {entry.test_accuracy:.3f} after {entry.seconds:.1f} s "
          f"({entry.path.name})")
    torch.save(entry.model.state_dict(), "own.pt")
    again = load_weights(resolve(spec, (1, 8, 8), 10), "own.pt").eval()  # strict: keys, shapes
    test = load("digits", "test")
    loader = DataLoader(TensorDataset(test.x, test.y), batch_size=32)
    print(f"reloaded from own.pt, streamed through a DataLoader: {evaluate(again, loader):.3f}")


if __name__ == "__main__":
    main()
