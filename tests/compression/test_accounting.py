"""Tests of compression.accounting: Huffman sizes, positions, composed plans."""

import numpy as np
import pytest

from compression import accounting
from compression import records
from compression.errors import InputError


def test_huffman_lengths_and_codes_by_hand():
  # Merges: (1,1)->2, (2,2)->4, (4,5)->9: depths 1, 2, 3, 3.
  lengths = accounting.huffman_code_lengths([5, 2, 1, 1])
  assert lengths.tolist() == [1, 2, 3, 3]
  # Canonical: 0, 10, 110, 111.
  assert accounting.canonical_codes(lengths).tolist() == [0, 2, 6, 7]
  assert accounting.huffman_code_lengths([0, 7, 0]).tolist() == [0, 1, 0]


def test_huffman_size_of_a_stream_by_hand():
  symbols = np.array([0] * 5 + [1] * 2 + [2, 3])
  bits, _ = accounting.huffman_payload_bits(symbols, 4)
  assert bits == 5 * 1 + 2 * 2 + 3 + 3  # 15 bits -> 2 bytes.
  s = accounting.Stream(symbols.astype(np.uint8), 'int', 2)
  assert s.fixed_bytes() == 3  # 9 codes x 2 bits = 18 bits.
  assert s.huffman_bytes() == 2 + 2  # 4 lengths x 4 bits, then 15 bits.
  # An encoder never keeps a code that loses: fixed width here.
  assert s.stored_bytes('huffman') == 3 and s.coding('huffman') == 'packed'
  blob = accounting.huffman_encode(symbols, 2)
  assert len(blob) == 4
  # Table nibbles (low first): lengths 1,2 | 3,3; codes 0 0 0 0 0 10 10 110 111.
  assert blob[:2] == bytes([0x21, 0x33])
  assert blob[2:] == bytes([0b00000101, 0b01101110])
  np.testing.assert_array_equal(accounting.huffman_decode(blob, 2, 9), symbols)


def test_huffman_round_trip_and_length_limit():
  rng = np.random.default_rng(0)
  fib = [1, 1]
  while len(fib) < 24:
    fib.append(fib[-1] + fib[-2])
  lengths = accounting.huffman_code_lengths(fib)
  assert lengths.max() <= accounting.MAX_CODE_LEN
  assert np.sum(2.0 ** -lengths[lengths > 0]) <= 1.0
  symbols = rng.choice(256, 3000, p=np.r_[fib, np.ones(232)] /
                       np.sum(np.r_[fib, np.ones(232)]))
  blob = accounting.huffman_encode(symbols, 8)
  np.testing.assert_array_equal(accounting.huffman_decode(blob, 8, 3000),
                                symbols)


def test_bad_huffman_input_is_an_input_error():
  with pytest.raises(InputError, match='Kraft'):
    accounting.canonical_codes([1, 1, 1])
  blob = accounting.huffman_encode(np.array([0, 1, 1, 2]), 2)
  with pytest.raises(InputError, match='ends early'):
    accounting.huffman_decode(blob, 2, 50)


def test_relative_indices_with_escape_symbols():
  # b = 2: steps 1..3, symbol 0 skips 3. Gaps 1, 3, 17 = 5 * 3 + 2.
  sym = accounting.gap_symbols(np.array([0, 3, 20]), 2)
  assert sym.tolist() == [1, 3, 0, 0, 0, 0, 0, 2]
  np.testing.assert_array_equal(accounting.gap_positions(sym, 2, 21, 3),
                                [0, 3, 20])
  with pytest.raises(InputError, match='do not fit'):
    accounting.gap_positions(sym, 2, 20, 3)


def _pruned_quantized():
  """4x4 kernel, 4 weights kept, 4-bit per-column codes (prune, quantize)."""
  w = np.array([[0.5, 0.0, 0.0, 0.0],
                [0.0, -0.25, 0.0, 0.0],
                [0.0, 0.0, 1.0, 0.0],
                [0.0, 0.0, 0.0, -0.75]], np.float32)
  mask = w != 0
  prune_entry = records.Record(positions=records.positions_of_mask(mask))
  scale = np.abs(w).max(0) / 7  # Per column, symmetric 4-bit: qmax 7.
  q = np.clip(np.round(w / scale), -7, 7)
  dense = (q * scale).astype(np.float32)
  quant_entry = records.Record(codes=records.Codes(
      u=(q + 7).astype(np.uint8), bits=4, scale=scale.astype(np.float32)))
  return dense, prune_entry, quant_entry


def test_prune_then_quantize_stores_kept_codes_only():
  dense, p_entry, q_entry = _pruned_quantized()
  tree = {'k': dense, 'b': np.ones(3, np.float32)}
  leaves = accounting.plan(tree, ({'k': p_entry}, {'k': q_entry}),
                           ['prune', 'quantize'], 'fixed')
  by = {l.path: l for l in leaves}
  k = by['k']
  assert k.encoding == 'prune+quantize' and k.node['k'] == 'sparse'
  assert k.node['v']['k'] == 'quant'
  # Positions: gaps 1, 6, 6, 6 at b=3: 4 x 3 bits = 2 bytes (bitmap: 2 too,
  # the first candidate is kept on ties); 4 codes x 4 bits = 2 bytes; 4
  # float32 scales = 16 bytes.
  assert [s.fixed_bytes() for s in k.streams] == [2, 2, 16]
  assert k.bytes('fixed') == 20
  assert by['b'].bytes('fixed') == 12 and by['b'].encoding == 'float32'
  got = accounting.decode_leaf(k.node, [s.data for s in k.streams], (4, 4))
  np.testing.assert_array_equal(got, dense)
  sizes = accounting.sizes(leaves)
  assert sizes.dense_bytes == 4 * 19
  assert sizes.fixed_width_bytes == 32
  assert sizes.params_nonzero == 7


def test_unknown_coding_and_mismatched_exports():
  with pytest.raises(InputError, match='coding'):
    accounting.plan({'a': np.zeros(2, np.float32)}, (), [], 'zip')
  with pytest.raises(InputError, match='2 export dicts for 1 methods'):
    accounting.plan({'a': np.zeros(2, np.float32)}, ({}, {}), ['prune'])


def test_records_that_do_not_reproduce_the_leaf_are_an_error():
  dense, p_entry, q_entry = _pruned_quantized()
  wrong = dense + 1.0  # Not what the records decode to.
  with pytest.raises(InputError, match=r'^accounting: k: the records of '
                     r'prune\+quantize do not decode to the values'):
    accounting.plan({'k': wrong}, ({'k': p_entry}, {'k': q_entry}),
                    ['prune', 'quantize'], 'fixed')


def test_an_export_that_is_not_a_record_is_an_error():
  dense, _, _ = _pruned_quantized()
  with pytest.raises(InputError, match=r'export of k: dict is not a '
                     r'compression.records.Record'):
    accounting.plan({'k': dense}, ({'k': {'codes': 1}},), ['mine'], 'fixed')
  with pytest.raises(InputError, match=r"exports 'x', which the dense tree"):
    accounting.plan({'k': dense}, ({'x': records.Record()},), ['mine'])


def test_accounting_dispatches_on_record_fields_not_method_names():
  # The same records under any method names give the same bytes.
  dense, p_entry, q_entry = _pruned_quantized()
  a = accounting.plan({'k': dense}, ({'k': p_entry}, {'k': q_entry}),
                      ['prune', 'quantize'], 'fixed')[0]
  b = accounting.plan({'k': dense}, ({'k': p_entry}, {'k': q_entry}),
                      ['where', 'what'], 'fixed')[0]
  assert a.node == b.node and a.bytes('fixed') == b.bytes('fixed') == 20
  assert b.encoding == 'where+what'
