-- analytics: money sums per sales bucket become whole `numeric`s. Each order, capture or
-- refund is at most 10^15 minor units, but a bucket sums any number of them, and a `bigint`
-- overflow made every later event of that bucket a dead letter. The API still answers
-- them as JSON integers.
ALTER TABLE analytics.sales
    ALTER COLUMN gross    TYPE numeric,
    ALTER COLUMN paid     TYPE numeric,
    ALTER COLUMN refunded TYPE numeric;
