-- Poster activity kept by panes. A post falls in window/slide sliding windows (10 with the
-- defaults) but in one slide-long pane, so each micro-batch now writes one row per
-- (pane, poster) instead of one per (window, poster): measured, the poster upsert was half of
-- the writer's time per batch. A sliding window is the sum of the panes it covers (the view
-- poster_activity keeps its columns); a pane takes records until the watermark passes its end,
-- so a window that ended before the watermark still never changes.
-- The counts kept per window until now cannot be split into panes: they start again.
DROP VIEW pinpipe.top_posters;
DROP TABLE pinpipe.poster_activity;

CREATE TABLE pinpipe.poster_pane (
    pane_start         timestamptz NOT NULL,
    pane_end           timestamptz NOT NULL,
    poster_name        text NOT NULL,
    posts              bigint NOT NULL,
    max_follower_count bigint,
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pane_start, poster_name)
);

-- The sliding window the panes add up to: one row, written by the stream job from its
-- settings (speed.poster_window_s, speed.poster_slide_s).
CREATE TABLE pinpipe.poster_window (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    window_length interval NOT NULL,
    slide         interval NOT NULL
);
INSERT INTO pinpipe.poster_window VALUES (true, interval '600 seconds', interval '60 seconds');

-- Posts per poster over every sliding window (aligned on the Unix epoch, like Spark's window()).
CREATE VIEW pinpipe.poster_activity AS
SELECT w.window_start, w.window_start + s.window_length AS window_end, p.poster_name,
       sum(p.posts)::bigint AS posts, max(p.max_follower_count) AS max_follower_count
FROM pinpipe.poster_pane AS p
CROSS JOIN pinpipe.poster_window AS s
CROSS JOIN LATERAL generate_series(
    date_bin(s.slide, p.pane_start, timestamptz '1970-01-01 00:00:00+00') - s.window_length + s.slide,
    date_bin(s.slide, p.pane_start, timestamptz '1970-01-01 00:00:00+00'),
    s.slide
) AS w(window_start)
GROUP BY 1, 2, 3;

-- The most active posters of the latest complete sliding window that holds posts, read from
-- that window's panes alone.
CREATE VIEW pinpipe.top_posters AS
WITH latest AS (
    SELECT least(
               date_bin(s.slide, now(), timestamptz '1970-01-01 00:00:00+00'),
               date_bin(s.slide, max(p.pane_start), timestamptz '1970-01-01 00:00:00+00') + s.window_length
           ) AS window_end,
           s.window_length
    FROM pinpipe.poster_pane AS p CROSS JOIN pinpipe.poster_window AS s
    WHERE p.pane_start < now()
    GROUP BY s.slide, s.window_length
)
SELECT l.window_end - l.window_length AS window_start, l.window_end, p.poster_name,
       sum(p.posts)::bigint AS posts, max(p.max_follower_count) AS max_follower_count,
       rank() OVER (ORDER BY sum(p.posts) DESC) AS rank
FROM pinpipe.poster_pane AS p
JOIN latest AS l ON p.pane_start >= l.window_end - l.window_length AND p.pane_start < l.window_end
GROUP BY l.window_end, l.window_length, p.poster_name;
