import numpy as np
import torch

from mssl_core.engine import row_sets
from mssl_core.engine.row_sets import remember_fingerprints, row_fingerprints, rows_among, stacked


def _rows(count: int = 40, width: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed))


def test_whole_rows_of_a_remembered_tensor_get_the_fingerprints_of_their_bytes():
    rows = _rows()
    remember_fingerprints(rows)
    view = rows[5:17]
    assert row_sets._known_view(view) is not None
    assert (row_fingerprints(view) == row_fingerprints(view.clone())).all()


def test_columns_of_a_remembered_tensor_are_recognised_in_any_copy_that_keeps_them():
    rows = _rows()
    fingerprints = remember_fingerprints(rows)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(1))
    reordered = rows[order].contiguous()
    remember_fingerprints(reordered, fingerprints[order.numpy()])
    found, where = rows_among(row_fingerprints(rows[:, 2:5]), row_fingerprints(reordered[:, 2:5]))
    assert (found == np.arange(len(rows))).all()
    assert torch.equal(reordered[where, 2:5], rows[:, 2:5])
    # other columns of the same rows are other rows
    assert not np.isin(row_fingerprints(rows[:, 1:4]), row_fingerprints(reordered[:, 2:5])).any()


def test_a_tensor_changed_in_place_is_hashed_again():
    rows = _rows()
    remember_fingerprints(rows)
    rows[3, 0] += 1.0
    assert row_sets._known_view(rows[:, 1:3]) is None
    assert (row_fingerprints(rows) == row_fingerprints(rows.clone())).all()


def test_stacked_views_keep_their_fingerprints():
    rows = _rows()
    remember_fingerprints(rows)
    joined = stacked(rows[30:, 1:4], rows[:10, 1:4])
    expected = np.concatenate([row_fingerprints(rows[30:, 1:4]), row_fingerprints(rows[:10, 1:4])])
    assert (row_fingerprints(joined) == expected).all()
    assert torch.equal(joined, torch.cat([rows[30:, 1:4], rows[:10, 1:4]]))


def test_a_forgotten_tensor_leaves_nothing_behind():
    rows = _rows()
    address = rows.untyped_storage().data_ptr()
    remember_fingerprints(rows)
    assert address in row_sets._remembered
    del rows
    assert address not in row_sets._remembered
