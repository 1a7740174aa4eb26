-- The batch job's answers (DATA_SPEC.md section 4), replaced on every batch run.
-- Counts and follower counts bigint, medians double precision, years integer.
CREATE TABLE IF NOT EXISTS pinpipe.top_category_by_country (
    country text, category text, category_count bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.top_category_by_year (
    post_year integer, category text, category_count bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.top_user_by_country (
    country text, poster_name text, follower_count bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.top_country_by_followers (
    country text, follower_count bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.top_category_by_age_group (
    age_group text, category text, category_count bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.median_followers_by_age_group (
    age_group text, median_follower_count double precision
);
CREATE TABLE IF NOT EXISTS pinpipe.users_joined_by_year (
    post_year integer, number_users_joined bigint
);
CREATE TABLE IF NOT EXISTS pinpipe.median_followers_by_join_year (
    post_year integer, median_follower_count double precision
);
CREATE TABLE IF NOT EXISTS pinpipe.median_followers_by_join_year_and_age_group (
    age_group text, post_year integer, median_follower_count double precision
);
