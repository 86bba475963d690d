"""Time: the one source of "now", ISO 8601 periods and schedules, and the stored-datetime grammar."""
