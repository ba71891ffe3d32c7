"""Run under another transformers (e.g. 4.57 in FLAGEMBED_REF_PYTHON): the key §12 equivalences; prints OK."""

from __future__ import annotations

import copy

import torch
from beacon_tiny import KINDS, ids, tiny_lm

from flagembed.longctx.beacon import BeaconModel, BeaconSettings, freeze_base


def main() -> None:
    for kind in KINDS:
        plain = tiny_lm(kind)
        x = ids(37)
        ref = plain(input_ids=x, labels=x)
        zero = BeaconModel(copy.deepcopy(plain), BeaconSettings(window=8, stride=8, ratio=(0,))).eval()
        out = zero(input_ids=x, labels=x)
        assert abs(float(out.loss.detach() - ref.loss.detach())) < 1e-5, kind
        assert (out.logits - ref.logits[:, 32:]).abs().max() < 1e-4, kind
        hf = plain.generate(input_ids=x[:, :13], max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert zero.generate(input_ids=x[:, :13], max_new_tokens=10, eos_token_id=[]).tolist() == hf.tolist(), kind
        four = BeaconModel(copy.deepcopy(plain), BeaconSettings(window=64, stride=64, ratio=(4,))).eval()
        got = four(input_ids=x).logits
        seq, pos = [], []
        for i, t in enumerate(x[0].tolist()):
            pos.append(len(seq))
            seq.append(t)
            if (i + 1) % 4 == 0:
                seq.append(plain.config.eos_token_id)
        assert (got - plain(input_ids=torch.tensor([seq])).logits[:, pos]).abs().max() < 1e-4, kind
        train = BeaconModel(copy.deepcopy(plain), BeaconSettings(window=8, stride=8, ratio=(4,))).train()
        freeze_base(train.model)
        train(input_ids=x, labels=x).loss.backward()
        assert all(("beacon_" in n) == (p.grad is not None) for n, p in train.model.named_parameters()), kind
    import transformers

    print(f"OK transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
