-- Real-time metrics of the speed layer, by broker time (when the record reached Kafka).
-- Each micro-batch adds its counts to the windows it touches, so a late record corrects its
-- window; windows that ended before the stream's watermark no longer change.
CREATE TABLE pinpipe.category_per_minute (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    category     text NOT NULL,
    events       bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (window_start, category)
);

CREATE TABLE pinpipe.country_per_minute (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    country      text NOT NULL,
    events       bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (window_start, country)
);

-- Posts per poster over sliding windows (length and slide are the stream job's settings).
CREATE TABLE pinpipe.poster_activity (
    window_start       timestamptz NOT NULL,
    window_end         timestamptz NOT NULL,
    poster_name        text NOT NULL,
    posts              bigint NOT NULL,
    max_follower_count bigint,
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (window_start, window_end, poster_name)
);

-- Per stream: the latest broker time seen; the watermark is this minus the allowed lateness.
CREATE TABLE pinpipe.stream_watermark (
    query_id       text PRIMARY KEY,
    max_event_time timestamptz NOT NULL,
    watermark      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The most active posters of the latest complete sliding window.
CREATE VIEW pinpipe.top_posters AS
SELECT window_start, window_end, poster_name, posts, max_follower_count,
       rank() OVER (PARTITION BY window_start, window_end ORDER BY posts DESC) AS rank
FROM pinpipe.poster_activity
WHERE window_end = (
    SELECT max(window_end) FROM pinpipe.poster_activity WHERE window_end <= now()
);
