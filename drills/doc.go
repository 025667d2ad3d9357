// Package drills runs rollback drills: schedules stored in etcd and parsed
// as cron expressions (with time zones), a leader-elected scheduler that
// records each run before it starts so a leader change never runs a drill
// twice, announcements ahead of each drill, the drill run itself — a real
// rollback to the previous version through the commands use case, verified,
// held, and flipped back — and calibration against the route's drill
// history and the rollback SLO, with a chart of the trend.
//
// It implements commands.DrillService. It must not import bot/ (it talks
// to chat through the Announcer interface declared here) and must not flip
// routes itself: every flip goes through commands, so a drill exercises
// exactly the code path of a real rollback.
package drills
