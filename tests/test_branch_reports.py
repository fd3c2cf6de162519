"""Networks with branches (RES[...], CAT[...]) in the reports and in training (issue 15):
`convnet summary` draws the tree and names what each merge reads, `explain` derives each merge,
a merge's receptive field is the union of its inputs' windows, and `train --resume` of a
residual network continues to the weights of an uninterrupted run."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import convnet as cn
from convnet.arith import layer_rows, union_receptive_field
from convnet.cli.main import main
from convnet.train import load_checkpoint

RES = "INPUT(9x9x1) -> RES[CONV(8,F=3,S=2,P=1) -> RELU -> CONV(8,F=3,P=1) | CONV(8,F=1,S=2)] -> FC(3)"
CAT = ("INPUT(8x8x1) -> CAT[CONV(2,F=1) | CONV(3,F=3,P=1) | CONV(4,F=5,P=2)] -> CONV(2,F=3,P=1) "
       "-> FC(3)")
# two branches whose windows are a row and a column: their union is neither of them
CROSS = "INPUT(8x8x1) -> CAT[CONV(2,F=1x5,P=0x2) | CONV(3,F=5x1,P=2x0)] -> CONV(2,F=3,P=1)"


def _table(capsys, spec):
    assert main(["summary", spec]) == 0
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    seps = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]
    return lines[seps[0] - 1:seps[1]]  # the header, the rule and the rows


def test_summary_draws_a_res_block_as_a_tree(capsys):
    assert _table(capsys, RES) == """\
#  layer    spec                  output  params    MACs   RF  RF stride  activations (N=1)
-------------------------------------------------------------------------------------------
0  input    INPUT(9x9x1)           9x9x1       0       0    1          1              324 B
   RES[     main branch
1    conv1  CONV(8,F=3,S=2,P=1)    5x5x8      80   1,800    3          2              800 B
2    relu1  RELU                   5x5x8       0       0    3          2              800 B
3    conv2  CONV(8,F=3,P=1)        5x5x8     584  14,400    7          2              800 B
   |        shortcut
4    conv3  CONV(8,F=1,S=2)        5x5x8      16     200    1          2              800 B
5  ] add1   ADD of conv2 + conv3   5x5x8       0       0    7          2              800 B
6  fc1      FC(3)                      3     603     600  all          -               12 B""".splitlines()


def test_summary_draws_a_cat_block_as_a_tree(capsys):
    assert _table(capsys, CAT) == """\
#  layer    spec                          output  params    MACs   RF  RF stride  activations (N=1)
---------------------------------------------------------------------------------------------------
0  input    INPUT(8x8x1)                   8x8x1       0       0    1          1              256 B
   CAT[     branch 1 of 3
1    conv1  CONV(2,F=1)                    8x8x2       4     128    1          1              512 B
   |        branch 2 of 3
2    conv2  CONV(3,F=3,P=1)                8x8x3      30   1,728    3          1              768 B
   |        branch 3 of 3
3    conv3  CONV(4,F=5,P=2)                8x8x4     104   6,400    5          1              1 KiB
4  ] cat1   CAT of conv1 + conv2 + conv3   8x8x9       0       0    5          1           2.25 KiB
5  conv4    CONV(2,F=3,P=1)                8x8x2     164  10,368    7          1              512 B
6  fc1      FC(3)                              3     387     384  all          -               12 B""".splitlines()


def test_summary_says_where_a_projection_was_inserted(capsys):
    table = _table(capsys, "INPUT(8x8x1) -> RES[CONV(4,F=3,P=1)] -> FC(3)")
    assert table[3].split() == ["RES[", "main", "branch"]
    assert table[5].split() == ["|", "shortcut,", "projected", "(inserted)"]
    assert table[6].split()[:3] == ["2", "conv2", "CONV(4,F=1)"]
    assert table[7].split()[:8] == ["3", "]", "add1", "ADD", "of", "conv1", "+", "conv2"]


def _explain(capsys, spec):
    assert main(["explain", spec]) == 0
    return capsys.readouterr().out


def test_explain_derives_each_merge(capsys):
    out = _explain(capsys, RES)
    assert "\nadd1: ADD   5x5x8 + 5x5x8 -> 5x5x8   (reads conv2, conv3)\n" in out
    assert "Adds its 2 inputs element by element: 5x5x8 (conv2) + 5x5x8 (conv3) -> 5x5x8" in out
    assert "\nconv3: CONV(8,F=1,S=2)   9x9x1 -> 5x5x8   (reads input)\n" in out
    assert "each unit sees the union of its inputs' windows, 7x7 input pixels" in out
    out = _explain(capsys, CAT)
    assert "\ncat1: CAT   8x8x2 + 8x8x3 + 8x8x4 -> 8x8x9   (reads conv1, conv2, conv3)\n" in out
    assert ("Stacks its 3 inputs along depth: 8x8x2 (conv1) + 8x8x3 (conv2) + 8x8x4 (conv3) -> "
            "8x8x9 (depth\n    2 + 3 + 4 = 9;") in out
    assert "each unit sees the union of its inputs' windows, 5x5 input pixels" in out


def test_a_merge_sees_the_union_of_its_inputs_windows(capsys):
    net = cn.build(CROSS, seed=0)
    rows = {r.name: r for r in layer_rows(net)}
    F = Fraction
    assert rows["conv1"].rf.size == (F(1), F(5)) and rows["conv2"].rf.size == (F(5), F(1))
    cat = rows["cat1"].rf
    assert cat == union_receptive_field([rows["conv1"].rf, rows["conv2"].rf])
    assert cat.size == (F(5), F(5)) and cat.start == (F(0), F(0))  # neither branch's window
    assert rows["conv3"].rf.size == (F(7), F(7))
    assert rows["cat1"].inputs == ("conv1", "conv2")
    # the pixels that really move a unit: the gradient of conv3's unit (4, 4) on the input
    x = np.random.default_rng(0).random((1, 8, 8, 1), dtype=np.float32)
    out = net.forward(x, train=True)
    dout = np.zeros_like(out)
    dout[0, 4, 4, 0] = 1
    dx = net.backward(dout)[0, :, :, 0]
    r, c = np.nonzero(dx)
    (top, bottom), (left, right) = rows["conv3"].rf.box((4, 4))
    assert (r.min(), r.max(), c.min(), c.max()) == (top, bottom, left, right) == (1, 7, 1, 7)
    # the summary shows both branch windows and their 5x5 union
    table = _table(capsys, CROSS)
    assert table[4].split()[6] == "1x5" and table[6].split()[6] == "5x1"
    assert table[7].split()[:3] == ["3", "]", "cat1"] and table[7].split()[11] == "5"


def test_resume_of_a_residual_network_equals_an_uninterrupted_run(tmp_path, capsys):
    arch = ("INPUT(8x8x1) -> CONV(4,F=3,P=1) -> RES[CONV(4,F=3,P=1) -> BN -> RELU -> "
            "CONV(4,F=3,P=1)] -> RELU -> POOL -> FC(10)")
    common = ["--arch", arch, "--schedule", "constant"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *common, "--epochs", "2", "--out", str(full)]) == 0
    assert main(["train", *common, "--epochs", "1", "--out", str(part)]) == 0
    assert load_checkpoint(part / "last.npz").epoch == 1
    capsys.readouterr()
    assert main(["train", "--resume", str(part), "--epochs", "2"]) == 0
    text = "".join(capsys.readouterr())
    assert f"resuming {part / 'last.npz'} at epoch 2 of 2" in text
    assert "epoch 2/2 " in text and "epoch 1/2 " not in text  # only the missing epoch ran
    a, b = load_checkpoint(full / "last.npz"), load_checkpoint(part / "last.npz")
    assert a.epoch == b.epoch == 2 and a.net.spec == b.net.spec
    assert "RES[" in b.net.spec
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sorted(sa) == sorted(sb) and any("running_mean" in k for k in sa)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
