package drills

import "github.com/robfig/cron/v3"

// cronParser parses the schedule grammar: five fields (minute, hour, day
// of month, month, day of week), descriptors such as @daily, and an
// optional CRON_TZ= (or TZ=) prefix naming the time zone.
func cronParser() cron.Parser {
	return cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}
