"""The UEA/UCR .ts reader on small hand-written files."""

import numpy as np
import pytest

from compression.errors import InputError
from data import ts_format

UNEQUAL = """# A comment line.
@problemName Toy
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true dog cat
@data
1.0,2.0,3.0:4.0,5.0,6.0:cat
7.0,8.0:9.0,10.5:dog

-1e-1,2.5e1,3,4:0,0,0,1:cat
"""

EQUAL = """@problemName Uni
@univariate true
@equalLength true
@seriesLength 3
@classLabel true 3 1 2
@data
0.5,1.5,2.5:1
3,4,5:2
6,7,8:3
"""


def _write(tmp_path, text, name='toy.ts'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_unequal_lengths_are_padded(tmp_path):
  d = ts_format.read_ts(_write(tmp_path, UNEQUAL))
  assert d.problem_name == 'Toy'
  assert d.class_labels == ('dog', 'cat')
  assert d.x.dtype == np.float32 and d.x.shape == (3, 4, 2)
  np.testing.assert_array_equal(d.lengths, [3, 2, 4])
  np.testing.assert_array_equal(d.y, [1, 0, 1])  # Order of @classLabel.
  np.testing.assert_array_equal(d.x[0], [[1, 4], [2, 5], [3, 6], [0, 0]])
  np.testing.assert_array_equal(d.x[1], [[7, 9], [8, 10.5], [0, 0], [0, 0]])
  np.testing.assert_allclose(d.x[2, :, 0], [-0.1, 25, 3, 4])


def test_equal_length_univariate(tmp_path):
  d = ts_format.read_ts(_write(tmp_path, EQUAL))
  assert d.x.shape == (3, 3, 1)
  np.testing.assert_array_equal(d.lengths, [3, 3, 3])
  # Labels map in listed order: '3' -> 0, '1' -> 1, '2' -> 2.
  np.testing.assert_array_equal(d.y, [1, 2, 0])
  np.testing.assert_array_equal(d.x[:, :, 0], [[0.5, 1.5, 2.5], [3, 4, 5],
                                               [6, 7, 8]])


def test_no_labels(tmp_path):
  text = '@dimensions 1\n@classLabel false\n@data\n1,2\n3,4,5\n'
  d = ts_format.read_ts(_write(tmp_path, text))
  assert d.y is None and d.class_labels == ()
  np.testing.assert_array_equal(d.lengths, [2, 3])


@pytest.mark.parametrize('text, match', [
    ('', r'toy.ts: file is empty'),
    ('@classLabel true a\n1,2:a\n', r'toy.ts: line 2: expected a "@key value"'),
    ('@classLabel true a b\n', r'toy.ts: no @data line'),
    ('@classLabel true a b\n@data\n', r'toy.ts: no cases after @data'),
    ('@classLabel true a b\n@data\n1,?,3:a\n',
     r'toy.ts: line 3: missing value "\?" in dimension 0; missing values are '
     r'not supported'),
    ('@classLabel true a b\n@data\n1,x,3:a\n',
     r"toy.ts: line 3: dimension 0 has non-numeric value 'x'"),
    ('@classLabel true a b\n@data\n1,2:c\n',
     r"toy.ts: line 3: class label 'c' is not listed by @classLabel; "
     r'valid: a, b'),
    ('@dimensions 2\n@classLabel true a\n@data\n1,2:a\n',
     r'toy.ts: line 4: has 1 dimensions, expected 2'),
    ('@classLabel true a\n@data\n1,2:3,4:a\n1,2:a\n',
     r'toy.ts: line 4: has 1 dimensions, expected 2'),
    ('@classLabel true a\n@data\n1,2:3:a\n',
     r'toy.ts: line 3: dimensions have different lengths \[2, 1\]'),
    ('@equalLength true\n@classLabel true a\n@data\n1,2:a\n1,2,3:a\n',
     r'toy.ts: line 5: length 3 differs from 2 although @equalLength true'),
    ('@classLabel true a\n@data\n1,nan:a\n',
     r'toy.ts: line 3: contains NaN or inf'),
    ('@timeStamps true\n@classLabel true a\n@data\n1:a\n',
     r'toy.ts: @timeStamps true is not supported'),
    ('@targetLabel true\n@data\n1:0.5\n',
     r'toy.ts: @targetLabel true \(regression\) is not supported'),
    ('@classLabel true\n@data\n1:a\n',
     r'toy.ts: @classLabel true lists no labels'),
    ('@univariate true\n@classLabel true a\n@data\n1:2:a\n',
     r'toy.ts: @univariate true but cases have 2 dimensions'),
])
def test_malformed_files(tmp_path, text, match):
  with pytest.raises(InputError, match=r'data file .*' + match):
    ts_format.read_ts(_write(tmp_path, text))


def test_missing_file(tmp_path):
  with pytest.raises(InputError, match=r'data file .*nope.ts: not found'):
    ts_format.read_ts(str(tmp_path / 'nope.ts'))
