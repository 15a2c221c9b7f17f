-- KPI views over a snapshot's tables (patron sql creates them; docs/snapshots.md describes each).
-- Months are UTC calendar months (the session time zone is UTC), written as the month's first day.
-- Rates are fractions 0..1 except NPS, which is -100..100. A view whose table is missing from an
-- older snapshot is left out of that session and listed by `.tables`.

-- Helper: (profile_id, month) for every month in which the customer sent any source event.
CREATE VIEW kpi_active_months AS
SELECT DISTINCT profile_id, date_trunc('month', day)::DATE AS month
FROM activity_daily
WHERE events > 0;

-- Monthly retention and churn: of the customers active in the previous month, how many were active
-- again this month (retained) and how many were not (churned). One row per month from the second
-- month with activity to the last; a month nobody was active in the month before is left out.
CREATE VIEW kpi_retention_monthly AS
WITH base AS (
    SELECT (month + INTERVAL 1 MONTH)::DATE AS month, profile_id FROM kpi_active_months
)
SELECT
    b.month,
    count(*) AS customers_at_start,
    count(a.profile_id) AS retained,
    count(*) - count(a.profile_id) AS churned,
    count(a.profile_id) / count(*) AS retention_rate,
    1 - count(a.profile_id) / count(*) AS churn_rate
FROM base b
LEFT JOIN kpi_active_months a ON a.profile_id = b.profile_id AND a.month = b.month
WHERE b.month <= (SELECT max(month) FROM kpi_active_months)
GROUP BY b.month
ORDER BY b.month;

-- Cohort retention by first-order month (purchase retention): customers grouped by the month of their
-- first order; for each month since (0 = the first-order month itself) the share who ordered again in
-- that month. Every cell up to the last month with orders is present (0 when nobody ordered).
CREATE VIEW kpi_cohort_retention_first_order AS
WITH order_months AS (
    SELECT DISTINCT profile_id, date_trunc('month', day)::DATE AS month FROM orders_daily WHERE orders > 0
),
cohort AS (SELECT profile_id, min(month) AS cohort_month FROM order_months GROUP BY profile_id),
sizes AS (SELECT cohort_month, count(*) AS cohort_size FROM cohort GROUP BY cohort_month),
grid AS (
    SELECT s.cohort_month, s.cohort_size, o.month_offset
    FROM sizes s
    CROSS JOIN LATERAL generate_series(
        0, datediff('month', s.cohort_month, (SELECT max(month) FROM order_months))
    ) AS o(month_offset)
),
cells AS (
    SELECT c.cohort_month, datediff('month', c.cohort_month, m.month) AS month_offset,
           count(*) AS retained
    FROM cohort c JOIN order_months m USING (profile_id)
    GROUP BY ALL
)
SELECT g.cohort_month, g.month_offset, g.cohort_size, coalesce(c.retained, 0) AS retained,
       coalesce(c.retained, 0) / g.cohort_size AS retention_rate
FROM grid g LEFT JOIN cells c USING (cohort_month, month_offset)
ORDER BY g.cohort_month, g.month_offset;

-- Cohort retention by signup month: customers grouped by the month of signup_at (the signed_up_at
-- trait, else first seen); for each month since signup the share who were active (any event) in it.
-- Activity before signup is not counted. Every cell from the first to the last month with any
-- activity is present; cells of earlier months (signups from before the data begins) are left out:
-- nobody was observed then, which is not the same as nobody being active.
CREATE VIEW kpi_cohort_retention_signup AS
WITH cohort AS (
    SELECT profile_id, date_trunc('month', signup_at)::DATE AS cohort_month
    FROM customers WHERE signup_at IS NOT NULL
),
sizes AS (SELECT cohort_month, count(*) AS cohort_size FROM cohort GROUP BY cohort_month),
grid AS (
    SELECT s.cohort_month, s.cohort_size, o.month_offset
    FROM sizes s
    CROSS JOIN LATERAL generate_series(
        0, datediff('month', s.cohort_month, (SELECT max(month) FROM kpi_active_months))
    ) AS o(month_offset)
    WHERE s.cohort_month + to_months(o.month_offset) >= (SELECT min(month) FROM kpi_active_months)
),
cells AS (
    SELECT c.cohort_month, datediff('month', c.cohort_month, a.month) AS month_offset,
           count(*) AS retained
    FROM cohort c JOIN kpi_active_months a ON a.profile_id = c.profile_id AND a.month >= c.cohort_month
    GROUP BY ALL
)
SELECT g.cohort_month, g.month_offset, g.cohort_size, coalesce(c.retained, 0) AS retained,
       coalesce(c.retained, 0) / g.cohort_size AS retention_rate
FROM grid g LEFT JOIN cells c USING (cohort_month, month_offset)
ORDER BY g.cohort_month, g.month_offset;

-- Helper: survey responses per profile and month with both kinds side by side.
CREATE VIEW kpi_survey_months AS
SELECT
    profile_id,
    date_trunc('month', day)::DATE AS month,
    sum(responses) FILTER (WHERE kind = 'NPS') AS nps_responses,
    sum(promoters) FILTER (WHERE kind = 'NPS') AS promoters,
    sum(detractors) FILTER (WHERE kind = 'NPS') AS detractors,
    sum(responses) FILTER (WHERE kind = 'CSAT') AS csat_responses,
    sum(score_sum) FILTER (WHERE kind = 'CSAT') AS csat_score_sum
FROM surveys_daily
GROUP BY ALL;

-- NPS and CSAT by month: NPS = 100 * (promoters - detractors) / responses (promoter: score >= 9,
-- detractor: <= 6); CSAT = the mean CSAT score. NULL when the month has no response of that kind.
CREATE VIEW kpi_satisfaction_monthly AS
SELECT
    month,
    coalesce(sum(nps_responses), 0) AS nps_responses,
    round(100 * (sum(promoters) - sum(detractors)) / sum(nps_responses), 1) AS nps,
    coalesce(sum(csat_responses), 0) AS csat_responses,
    round(sum(csat_score_sum) / sum(csat_responses), 2) AS csat
FROM kpi_survey_months
GROUP BY month
ORDER BY month;

-- NPS and CSAT by segment, over all responses in the snapshot: per current RFM segment
-- (dimension 'rfm_segment') and per current lifecycle stage (dimension 'lifecycle_stage').
-- Customers without a segment (no orders) or stage are grouped as '(none)'.
CREATE VIEW kpi_satisfaction_by_segment AS
WITH labelled AS (
    SELECT 'rfm_segment' AS dimension, coalesce(r.segment, '(none)') AS segment, s.*
    FROM kpi_survey_months s LEFT JOIN rfm r USING (profile_id)
    UNION ALL
    SELECT 'lifecycle_stage', coalesce(l.stage, '(none)'), s.*
    FROM kpi_survey_months s LEFT JOIN lifecycle l USING (profile_id)
)
SELECT
    dimension,
    segment,
    coalesce(sum(nps_responses), 0) AS nps_responses,
    round(100 * (sum(promoters) - sum(detractors)) / sum(nps_responses), 1) AS nps,
    coalesce(sum(csat_responses), 0) AS csat_responses,
    round(sum(csat_score_sum) / sum(csat_responses), 2) AS csat
FROM labelled
GROUP BY dimension, segment
ORDER BY dimension, segment;

-- Support: first-response time and time-to-resolution (seconds; median and 90th percentile,
-- interpolated) by month the ticket was opened and by priority, plus priority 'all' per month.
-- Times count only tickets that have them (a ticket still waiting has no first response yet).
CREATE VIEW kpi_support_monthly AS
SELECT
    date_trunc('month', opened_at)::DATE AS month,
    CASE WHEN grouping(priority) = 1 THEN 'all' ELSE coalesce(priority, '(none)') END AS priority,
    count(*) AS tickets,
    count(resolved_at) AS resolved,
    quantile_cont(first_response_seconds, 0.5) AS first_response_median_s,
    quantile_cont(first_response_seconds, 0.9) AS first_response_p90_s,
    quantile_cont(resolution_seconds, 0.5) AS resolution_median_s,
    quantile_cont(resolution_seconds, 0.9) AS resolution_p90_s
FROM tickets
WHERE opened_at IS NOT NULL
GROUP BY GROUPING SETS ((month, priority), (month))
ORDER BY month, priority;

-- Lead conversion by month the lead was created: the share of leads with a won deal naming them.
CREATE VIEW kpi_lead_conversion_monthly AS
WITH lead_created AS (SELECT lead_id, min(created_at) AS created_at FROM leads GROUP BY lead_id),
won AS (SELECT DISTINCT lead_id FROM deals WHERE won AND lead_id IS NOT NULL)
SELECT
    date_trunc('month', l.created_at)::DATE AS month,
    count(*) AS leads,
    count(w.lead_id) AS converted,
    count(w.lead_id) / count(*) AS conversion_rate
FROM lead_created l LEFT JOIN won w USING (lead_id)
GROUP BY ALL
ORDER BY month;

-- Sales-cycle length of won deals by month closed, in days: from the lead's creation when the deal
-- names a known lead, else from the deal's creation, to the deal's close (median, mean, 90th percentile).
CREATE VIEW kpi_sales_cycle_monthly AS
WITH lead_created AS (SELECT lead_id, min(created_at) AS created_at FROM leads GROUP BY lead_id),
cycles AS (
    SELECT d.closed_at,
           (epoch(d.closed_at) - epoch(coalesce(l.created_at, d.created_at))) / 86400 AS cycle_days
    FROM deals d LEFT JOIN lead_created l USING (lead_id)
    WHERE d.won AND d.closed_at IS NOT NULL
)
SELECT
    date_trunc('month', closed_at)::DATE AS month,
    count(*) AS won_deals,
    quantile_cont(cycle_days, 0.5) AS cycle_median_days,
    avg(cycle_days) AS cycle_mean_days,
    quantile_cont(cycle_days, 0.9) AS cycle_p90_days
FROM cycles
GROUP BY ALL
ORDER BY month;

-- ARPU by month: net revenue (orders' revenue minus refunds issued that month) per customer active
-- in the month (any event); paying_customers placed at least one order.
CREATE VIEW kpi_arpu_monthly AS
WITH revenue AS (
    SELECT date_trunc('month', day)::DATE AS month, sum(revenue) AS revenue,
           count(DISTINCT profile_id) AS paying_customers
    FROM orders_daily WHERE orders > 0 GROUP BY ALL
),
refunded AS (SELECT date_trunc('month', day)::DATE AS month, sum(amount) AS refunds FROM refunds_daily GROUP BY ALL),
active AS (SELECT month, count(*) AS active_customers FROM kpi_active_months GROUP BY month)
SELECT
    a.month,
    a.active_customers,
    coalesce(r.paying_customers, 0) AS paying_customers,
    coalesce(r.revenue, 0) AS revenue,
    coalesce(f.refunds, 0) AS refunds,
    coalesce(r.revenue, 0) - coalesce(f.refunds, 0) AS net_revenue,
    (coalesce(r.revenue, 0) - coalesce(f.refunds, 0)) / a.active_customers AS arpu
FROM active a
LEFT JOIN revenue r USING (month)
LEFT JOIN refunded f USING (month)
ORDER BY a.month;

-- Repeat-purchase rate: of the customers who ordered, the share who ordered at least twice (orders,
-- not days), per first-order month and overall (the row whose first_order_month is NULL).
CREATE VIEW kpi_repeat_purchase AS
WITH buyers AS (
    SELECT profile_id, date_trunc('month', min(day))::DATE AS first_order_month, sum(orders) AS orders
    FROM orders_daily WHERE orders > 0 GROUP BY profile_id
)
SELECT
    first_order_month,
    count(*) AS buyers,
    count(*) FILTER (WHERE orders >= 2) AS repeat_buyers,
    count(*) FILTER (WHERE orders >= 2) / count(*) AS repeat_purchase_rate
FROM buyers
GROUP BY ROLLUP (first_order_month)
ORDER BY first_order_month NULLS LAST;
