"""`RankSlice`: a one-rank source split over ranks (fine-tuning under torchrun) keeps the global batches."""

from __future__ import annotations

import itertools

import pytest
import torch
from train.synthetic import SyntheticBatches

from t5lab import T5LabError
from t5lab.train.distributed import RankSlice


def test_the_ranks_slices_make_up_the_one_rank_batches_and_share_its_position():
    source = SyntheticBatches(101, batch_size=4)
    ranks = [RankSlice(SyntheticBatches(101, batch_size=4), rank, 2) for rank in range(2)]
    parts = [list(itertools.islice(iter(r), 3)) for r in ranks]
    for k, whole in enumerate(itertools.islice(iter(source), 3)):
        for key in ("input_ids", "labels"):
            torch.testing.assert_close(torch.cat([parts[0][k][key], parts[1][k][key]]), whole[key], rtol=0, atol=0)
    assert ranks[0].state_dict() == ranks[1].state_dict() == source.state_dict() == {"position": 3}


def test_a_micro_batch_the_ranks_cannot_split_is_an_error():
    with pytest.raises(T5LabError, match="3 examples does not split over 2 ranks"):
        next(iter(RankSlice(SyntheticBatches(101, batch_size=3), 0, 2)))
