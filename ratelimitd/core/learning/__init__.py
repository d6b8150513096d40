"""Learning from 429s and headers: one `BucketLearner` per bucket and the policies it runs."""
