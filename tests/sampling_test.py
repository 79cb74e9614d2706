"""Samplers: the keyed permutation is a bijection at any size, evaluated without building it;
P x K draws equal the earlier list-based sampler's; shuffled epochs split over hosts are
disjoint and cover every image."""

import numpy as np
import pytest

from facejax.data import sampling
from facejax.data.sampling import ClassIndex


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64, 65, 1000, 4097])
def test_permute_is_a_bijection(n):
  for key in [(0, 0), (1, 7), (2**40, 3)]:
    perm = sampling.permute(np.arange(n), n, key)
    assert sorted(perm.tolist()) == list(range(n))
  if n >= 64:
    a, b = sampling.permute(np.arange(n), n, (0, 0)), sampling.permute(np.arange(n), n, (0, 1))
    assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(n))


def test_permute_is_evaluated_pointwise_at_any_size():
  n = 10**12  # a permutation of it could not be built
  positions = np.array([0, 1, 5, n - 1])
  out = sampling.permute(positions, n, (3, 4))
  assert out.min() >= 0 and out.max() < n and len(set(out.tolist())) == 4
  np.testing.assert_array_equal(out[1:3], sampling.permute(positions[1:3], n, (3, 4)))


def test_permute_spreads_each_position_uniformly():
  # Where position 0 lands over 2,000 keys: no bin of 10 far from 200.
  n = 100
  landed = [int(sampling.permute(np.array([0]), n, (k, 0))[0]) for k in range(2000)]
  counts = np.bincount(np.array(landed) // 10, minlength=10)
  chi2 = ((counts - 200) ** 2 / 200).sum()
  assert chi2 < 30, counts  # 9 degrees of freedom: p < 1e-3 above ~27.9


def _old_pk(by_class, p, k, seed, step):
  """The sampler as it stood before the class index: choice over lists of members."""
  rng = np.random.default_rng([seed, step])
  classes = rng.choice(len(by_class), size=p, replace=False)
  rows = []
  for c in classes:
    take = min(k, len(by_class[c]))
    picked = rng.choice(by_class[c], size=take, replace=False)
    rows.append(np.r_[picked, np.full(k - take, picked[0])])
  return np.concatenate(rows), np.repeat(classes, k)


def test_pk_draws_are_those_of_the_list_sampler():
  rng = np.random.default_rng(0)
  labels = np.sort(rng.integers(0, 40, 300))
  by_class = [np.flatnonzero(labels == c) for c in range(40)]
  classes = ClassIndex.from_labels(labels, 40)
  for step in range(10):
    idx, lab, _ = sampling.sample_pk(classes, 8, 4, seed=2, step=step)
    old_idx, old_lab = _old_pk(by_class, 8, 4, 2, step)
    np.testing.assert_array_equal(idx, old_idx)
    np.testing.assert_array_equal(lab, old_lab)


def test_pk_picks_only_eligible_classes_of_an_unsorted_index():
  labels = np.array([3, 0, 3, 1, 2, 3, 0, 2, 2, 1, 4])  # class 4 has one image
  classes = ClassIndex.from_labels(labels, 6, min_images=2)  # class 5 has none
  assert classes.eligible.tolist() == [0, 1, 2, 3]
  assert classes.members(3).tolist() == [0, 2, 5]
  for step in range(20):
    idx, lab, mask = sampling.sample_pk(classes, 3, 2, seed=0, step=step)
    np.testing.assert_array_equal(labels[idx], lab)
    assert set(lab.tolist()) <= {0, 1, 2, 3} and mask.all()


@pytest.mark.parametrize("hosts", [1, 2, 4])
def test_shuffled_epochs_split_over_hosts_cover_every_image_once(hosts):
  labels = np.random.default_rng(1).integers(0, 7, 96)
  classes = ClassIndex.from_labels(labels)
  batch = 16
  slices = {h: [] for h in range(hosts)}
  for step in range(96 // batch):  # one epoch
    idx, lab, _ = sampling.sample_shuffled(classes, batch, seed=4, step=step)
    np.testing.assert_array_equal(lab, labels[idx])
    local = batch // hosts
    for h in range(hosts):  # the slice train_batches gives host h
      slices[h].extend(idx[h * local:(h + 1) * local].tolist())
  seen = [set(v) for v in slices.values()]
  assert sum(len(s) for s in seen) == 96 == len(set().union(*seen))
