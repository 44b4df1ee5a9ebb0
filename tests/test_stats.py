import math

from shopguide.stats import histogram_quantile, percentile


def test_percentile_is_the_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 0.5) == 3
    assert percentile([1, 2, 3, 4], 0.99) == 4
    assert math.isnan(percentile([], 0.5))


def test_histogram_quantile_is_the_bound_of_the_bucket_holding_it():
    buckets = [("0.01", 50), ("0.05", 90), ("0.1", 99), ("+Inf", 100)]
    assert histogram_quantile(buckets, 0.5) == 0.01
    assert histogram_quantile(buckets, 0.9) == 0.05
    assert histogram_quantile(buckets, 0.995) == math.inf
    assert math.isnan(histogram_quantile([("+Inf", 0)], 0.5))
