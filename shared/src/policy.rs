//! Deploy windows and freezes: may an environment be deployed to at a given moment?
//!
//! Each environment may name a time zone, weekly **windows** in which deploying is allowed,
//! and **freezes**: date ranges, each with a reason, during which nothing is deployed. The
//! answer is read at the moment of promotion, so a freeze also holds runs created before it.
//!
//! ```toml
//! [[pipelines.environments]]
//! name = "production"
//! timezone = "Europe/Berlin"          # IANA name; default "UTC"
//! windows = [
//!   { days = ["mon-thu"], from = "09:00", to = "16:00" },
//!   { days = ["fri"], from = "09:00", to = "12:00" },
//! ]
//! freezes = [
//!   { from = "2026-12-20", to = "2027-01-04", reason = "end-of-year freeze" },
//!   { from = "2026-11-27T12:00", to = "2026-11-28T08:00", reason = "Black Friday" },
//! ]
//! ```
//!
//! **Windows.** `days` lists the days a window opens on: `mon` … `sun` (or `monday` …
//! `sunday`, any case), or an inclusive range such as `"mon-fri"` or `"fri-mon"`; at least
//! one, none twice. `from` and `to` are local times of day (`"09:00"`, `"17:30:00"`). A window
//! is open from `from` up to, not including, `to`. When `to` is not after `from` the window
//! crosses midnight and ends on the next day: `{ days = ["fri"], from = "22:00", to = "02:00" }`
//! is Friday 22:00 to Saturday 02:00, and `from = to` is 24 hours (`"00:00"` to `"00:00"` is
//! the whole day). With no windows, any time is allowed. Times are local: a window from 09:00
//! opens at 09:00 on the wall clock before and after a daylight-saving change. A local time
//! skipped by the change (02:30 on the spring-forward night) is read as the same moment one
//! hour later, and a repeated one as its first occurrence.
//!
//! **Freezes.** `from` and `to` are each a date (`"2026-12-20"`) or a date and local time
//! (`"2026-11-27T12:00"`). A date `from` starts at the beginning of that day; a date `to`
//! *includes* that whole day, so `"2026-12-20"` to `"2027-01-04"` ends at midnight between
//! January 4 and 5. A date-time `to` ends at that moment. `reason` may not be empty; it is
//! shown on every held run. TOML's own unquoted dates and times (`from = 2026-12-20`) are
//! read the same way; offsets (`Z`, `+01:00`) are refused, as both bounds are local to
//! `timezone`.
//!
//! [`verdict`] answers [`Verdict::Open`], or [`Verdict::Held`] with a reason and the first
//! moment deploying is allowed again: not frozen *and* inside a window. A freeze that ends on
//! a Saturday with weekday windows is held until Monday's window opens.

use std::fmt;

use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::{Deserialize, Deserializer};

/// The time zone used when an environment names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A weekly window in which deploying is allowed: on each of `days`, from `from` up to `to`
/// local time (see the [module docs](self)).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `"mon"` … `"sun"`, full names, or ranges like `"mon-fri"`.
    pub days: Vec<String>,
    /// When the window opens, a local time of day (`"09:00"`).
    #[serde(deserialize_with = "date_or_time")]
    pub from: String,
    /// When it closes (`"16:00"`); not after `from`: on the next day.
    #[serde(deserialize_with = "date_or_time")]
    pub to: String,
}

/// A period in which nothing is deployed, with the reason people are shown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// A date (from the start of that day) or a local date and time.
    #[serde(deserialize_with = "date_or_time")]
    pub from: String,
    /// A date (to the end of that day, inclusive) or a local date and time (exclusive).
    #[serde(deserialize_with = "date_or_time")]
    pub to: String,
    pub reason: String,
}

/// May an environment be deployed to now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes.
    Open,
    /// No: `reason` in words for people; `until` is the first moment deploying is allowed
    /// again (unfrozen and inside a window), `None` if no such moment ever comes.
    Held { reason: String, until: Option<Timestamp> },
}

/// What is wrong with an environment's windows, freezes or time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key at fault, relative to the environment: `timezone`, `windows[0].from`, …
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for Problem {}

/// Checks an environment's time zone, windows and freezes; the first problem found, naming
/// its key.
pub fn validate(timezone: Option<&str>, windows: &[Window], freezes: &[Freeze]) -> Result<(), Problem> {
    Policy::parse(timezone, windows, freezes).map(|_| ())
}

/// Whether deploying is allowed at `now`. A policy that does not [`validate`] holds every
/// deploy, with the problem as the reason and no `until`.
pub fn verdict(timezone: Option<&str>, windows: &[Window], freezes: &[Freeze], now: Timestamp) -> Verdict {
    match Policy::parse(timezone, windows, freezes) {
        Ok(policy) => policy.verdict(now),
        Err(problem) => Verdict::Held {
            reason: format!("the deploy windows or freezes are invalid: {problem}"),
            until: None,
        },
    }
}

/// Reads a string, or one of TOML's own date and time values as the text it was written as.
fn date_or_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(deserializer)? {
        toml::Value::String(text) => Ok(text),
        toml::Value::Datetime(value) => Ok(value.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a date or time such as \"2026-12-20\" or \"09:00\", found a {}",
            other.type_str()
        ))),
    }
}

/// A parsed and checked policy.
#[derive(Debug)]
struct Policy {
    tz: TimeZone,
    windows: Vec<WeeklyWindow>,
    freezes: Vec<Frozen>,
}

#[derive(Debug)]
struct WeeklyWindow {
    /// Indexed by [`Weekday::to_monday_zero_offset`].
    days: [bool; 7],
    from: Time,
    to: Time,
}

#[derive(Debug)]
struct Frozen {
    start: Timestamp,
    /// Exclusive.
    end: Timestamp,
    reason: String,
}

impl Frozen {
    fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

impl Policy {
    fn parse(timezone: Option<&str>, windows: &[Window], freezes: &[Freeze]) -> Result<Self, Problem> {
        let name = timezone.unwrap_or(DEFAULT_TIMEZONE);
        let tz = TimeZone::get(name).map_err(|e| Problem {
            key: "timezone".into(),
            message: format!(
                "{name:?} is not a known time zone; use an IANA name such as \"Europe/Berlin\" or \"UTC\" ({e})"
            ),
        })?;

        let mut parsed_windows = Vec::with_capacity(windows.len());
        for (i, window) in windows.iter().enumerate() {
            let problem = |key: &str, message: String| Problem {
                key: format!("windows[{i}].{key}"),
                message,
            };
            parsed_windows.push(WeeklyWindow {
                days: days(&window.days).map_err(|m| problem("days", m))?,
                from: time_of_day(&window.from).map_err(|m| problem("from", m))?,
                to: time_of_day(&window.to).map_err(|m| problem("to", m))?,
            });
        }

        let mut parsed_freezes = Vec::with_capacity(freezes.len());
        for (i, freeze) in freezes.iter().enumerate() {
            let problem = |key: &str, message: String| Problem {
                key: format!("freezes[{i}].{key}"),
                message,
            };
            let start = bound(&freeze.from)
                .and_then(|b| b.start())
                .map_err(|m| problem("from", m))?;
            let end = bound(&freeze.to).and_then(|b| b.end()).map_err(|m| problem("to", m))?;
            if end <= start {
                return Err(problem(
                    "to",
                    format!(
                        "the freeze ends ({:?}) before it starts ({:?}); a date `to` includes that whole day",
                        freeze.to, freeze.from
                    ),
                ));
            }
            if freeze.reason.trim().is_empty() {
                return Err(problem(
                    "reason",
                    "say why nothing may be deployed; the reason is shown on every held run".into(),
                ));
            }
            let instant = |dt: DateTime, key: &str| {
                instant(&tz, dt).ok_or_else(|| problem(key, format!("{dt} is out of range in {name}")))
            };
            parsed_freezes.push(Frozen {
                start: instant(start, "from")?,
                end: instant(end, "to")?,
                reason: freeze.reason.trim().to_owned(),
            });
        }

        Ok(Self {
            tz,
            windows: parsed_windows,
            freezes: parsed_freezes,
        })
    }

    fn verdict(&self, now: Timestamp) -> Verdict {
        if let Some(freeze) = self.freezes.iter().find(|f| f.contains(now)) {
            let until = self.next_open(now);
            let resume = match until {
                Some(at) if at != freeze.end => format!("; deploys resume {}", self.local(at)),
                Some(_) => String::new(),
                None => "; no deploy window opens after it".to_owned(),
            };
            return Verdict::Held {
                reason: format!("freeze: {} (until {}{resume})", freeze.reason, self.local(freeze.end)),
                until,
            };
        }
        if !self.windows.is_empty() && !self.in_window(now) {
            let until = self.next_open(now);
            let reason = match until {
                Some(at) => format!("outside the deploy windows (next opens {})", self.local(at)),
                None => "outside the deploy windows (none ever opens)".to_owned(),
            };
            return Verdict::Held { reason, until };
        }
        Verdict::Open
    }

    /// The first moment at or after `t` that is frozen by no freeze and inside a window (if
    /// any are configured).
    fn next_open(&self, mut t: Timestamp) -> Option<Timestamp> {
        // Each step either jumps past the end of a freeze, which happens at most once per
        // freeze as `t` only moves forward, or moves to a window's opening, after which `t`
        // is open or frozen.
        for _ in 0..2 * self.freezes.len() + 4 {
            let frozen_until = self.freezes.iter().filter(|f| f.contains(t)).map(|f| f.end).max();
            if let Some(end) = frozen_until {
                t = end;
            } else if self.windows.is_empty() || self.in_window(t) {
                return Some(t);
            } else {
                t = self.next_opening(t)?;
            }
        }
        None
    }

    /// Whether a window is open at `t`.
    fn in_window(&self, t: Timestamp) -> bool {
        let today = self.tz.to_datetime(t).date();
        // A window that opened yesterday may cross midnight into today.
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .flat_map(|date| self.openings(date))
            .any(|(start, end)| start <= t && t < end)
    }

    /// The first window opening at or after `t`. Windows repeat weekly, so if none opens in
    /// the next eight days, none ever will.
    fn next_opening(&self, t: Timestamp) -> Option<Timestamp> {
        let mut date = self.tz.to_datetime(t).date();
        let mut first: Option<Timestamp> = None;
        for _ in 0..9 {
            for (start, _) in self.openings(date) {
                if start >= t && first.is_none_or(|f| start < f) {
                    first = Some(start);
                }
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
        first
    }

    /// The windows that open on `date`, as `[start, end)`; any made empty by a
    /// daylight-saving change are left out.
    fn openings(&self, date: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let day = usize::from(date.weekday().to_monday_zero_offset().unsigned_abs());
        self.windows
            .iter()
            .filter(move |w| w.days.get(day).copied().unwrap_or(false))
            .filter_map(move |w| {
                let start = instant(&self.tz, date.to_datetime(w.from))?;
                let end_date = if w.to <= w.from { date.tomorrow().ok()? } else { date };
                let end = instant(&self.tz, end_date.to_datetime(w.to))?;
                (start < end).then_some((start, end))
            })
    }

    /// `t` on the local wall clock: `Mon 2026-11-30 09:00 Europe/Berlin`.
    fn local(&self, t: Timestamp) -> String {
        let zoned: Zoned = t.to_zoned(self.tz.clone());
        jiff::fmt::strtime::BrokenDownTime::from(&zoned)
            .to_string("%a %Y-%m-%d %H:%M %Q")
            .unwrap_or_else(|_| zoned.to_string())
    }
}

/// The moment local `dt` is in `tz`; a skipped local time is read an hour (the gap) later, a
/// repeated one as its first occurrence.
fn instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(dt).compatible().ok()
}

/// Parses a `days` list into a set of weekdays.
fn days(specs: &[String]) -> Result<[bool; 7], String> {
    if specs.is_empty() {
        return Err("list at least one day, such as [\"mon-fri\"]".into());
    }
    let mut set = [false; 7];
    for spec in specs {
        let (first, last) = match spec.split_once('-') {
            Some((first, last)) => (weekday(first)?, weekday(last)?),
            None => {
                let day = weekday(spec)?;
                (day, day)
            }
        };
        let mut day = first;
        loop {
            let slot = usize::from(day.to_monday_zero_offset().unsigned_abs());
            if let Some(seen) = set.get_mut(slot) {
                if *seen {
                    return Err(format!("{} is listed more than once", short_name(day)));
                }
                *seen = true;
            }
            if day == last {
                break;
            }
            day = day.next();
        }
    }
    Ok(set)
}

fn weekday(name: &str) -> Result<Weekday, String> {
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(format!(
                "{name:?} is not a day; use mon, tue, wed, thu, fri, sat, sun, or a range such as \"mon-fri\""
            ));
        }
    })
}

fn short_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

fn time_of_day(text: &str) -> Result<Time, String> {
    text.trim()
        .parse::<Time>()
        .map_err(|e| format!("{text:?} is not a local time of day such as \"09:00\" ({e})"))
}

/// A freeze's `from` or `to`: a whole day or a local moment.
enum Bound {
    Day(Date),
    At(DateTime),
}

impl Bound {
    /// The first local moment the bound covers.
    fn start(self) -> Result<DateTime, String> {
        Ok(match self {
            Bound::Day(date) => date.to_datetime(Time::midnight()),
            Bound::At(at) => at,
        })
    }

    /// The local moment just after the bound: a day's end, inclusive of that day.
    fn end(self) -> Result<DateTime, String> {
        match self {
            Bound::Day(date) => date
                .tomorrow()
                .map(|next| next.to_datetime(Time::midnight()))
                .map_err(|e| format!("{date} has no next day ({e})")),
            Bound::At(at) => Ok(at),
        }
    }
}

fn bound(text: &str) -> Result<Bound, String> {
    let text = text.trim();
    // A time part is separated by `T` (or a space); without one, the bound is a whole day.
    let parsed = if text.contains(['T', 't', ' ']) {
        text.parse::<DateTime>().map(Bound::At)
    } else {
        text.parse::<Date>().map(Bound::Day)
    };
    parsed.map_err(|e| {
        format!(
            "{text:?} is not a date such as \"2026-12-20\" or a local date and time such as \"2026-11-27T12:00\" ({e})"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERLIN: Option<&str> = Some("Europe/Berlin");

    fn window(days: &[&str], from: &str, to: &str) -> Window {
        Window {
            days: days.iter().map(|d| (*d).to_owned()).collect(),
            from: from.into(),
            to: to.into(),
        }
    }

    fn freeze(from: &str, to: &str, reason: &str) -> Freeze {
        Freeze {
            from: from.into(),
            to: to.into(),
            reason: reason.into(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Mon–Thu 09:00–16:00 Berlin, as in the module docs.
    fn office_hours() -> Vec<Window> {
        vec![window(&["mon", "tue", "wed", "thu"], "09:00", "16:00")]
    }

    fn until(verdict: &Verdict) -> Option<Timestamp> {
        match verdict {
            Verdict::Open => panic!("expected held, got open"),
            Verdict::Held { until, .. } => *until,
        }
    }

    #[test]
    fn no_windows_and_no_freezes_is_always_open() {
        for now in ["2026-01-01T00:00Z", "2026-06-13T03:17Z", "2027-12-31T23:59:59Z"] {
            assert_eq!(verdict(None, &[], &[], at(now)), Verdict::Open, "{now}");
            assert_eq!(verdict(BERLIN, &[], &[], at(now)), Verdict::Open, "{now}");
        }
    }

    /// `now` (UTC) → open, or held until (UTC), for Mon–Thu 09:00–16:00 in Berlin.
    #[test]
    fn office_hours_in_berlin() {
        let windows = office_hours();
        let cases: &[(&str, &str, Option<&str>)] = &[
            // Winter (CET, UTC+1). 2026-03-02 is a Monday.
            ("Monday 09:00 opens", "2026-03-02T08:00Z", None),
            ("Monday noon", "2026-03-02T11:00Z", None),
            ("Monday 15:59:59", "2026-03-02T14:59:59Z", None),
            (
                "Monday 08:59 waits a minute",
                "2026-03-02T07:59Z",
                Some("2026-03-02T08:00Z"),
            ),
            ("Monday 16:00 closes", "2026-03-02T15:00Z", Some("2026-03-03T08:00Z")),
            ("Monday night", "2026-03-02T22:00Z", Some("2026-03-03T08:00Z")),
            (
                "Thursday evening waits for Monday",
                "2026-03-05T17:00Z",
                Some("2026-03-09T08:00Z"),
            ),
            ("Friday noon", "2026-03-06T11:00Z", Some("2026-03-09T08:00Z")),
            ("Saturday", "2026-03-07T11:00Z", Some("2026-03-09T08:00Z")),
            ("Sunday 23:30 local", "2026-03-08T22:30Z", Some("2026-03-09T08:00Z")),
            // Clocks go forward on Sunday 2026-03-29: 09:00 CEST is 07:00Z.
            (
                "Friday before the change",
                "2026-03-27T11:00Z",
                Some("2026-03-30T07:00Z"),
            ),
            ("Monday after the change, 09:00 CEST", "2026-03-30T07:00Z", None),
            (
                "Monday after the change, 08:59 CEST",
                "2026-03-30T06:59Z",
                Some("2026-03-30T07:00Z"),
            ),
            ("Monday after the change, 15:59 CEST", "2026-03-30T13:59Z", None),
            (
                "Monday after the change, 16:00 CEST",
                "2026-03-30T14:00Z",
                Some("2026-03-31T07:00Z"),
            ),
            // Clocks go back on Sunday 2026-10-25: 09:00 CET is 08:00Z again.
            ("Thursday before going back", "2026-10-22T07:00Z", None),
            (
                "Monday after going back, 08:00 CET",
                "2026-10-26T07:00Z",
                Some("2026-10-26T08:00Z"),
            ),
            ("Monday after going back, 09:00 CET", "2026-10-26T08:00Z", None),
        ];
        for (name, now, expected) in cases {
            let got = verdict(BERLIN, &windows, &[], at(now));
            match expected {
                None => assert_eq!(got, Verdict::Open, "{name}"),
                Some(expected) => assert_eq!(until(&got), Some(at(expected)), "{name}: {got:?}"),
            }
        }
    }

    #[test]
    fn outside_the_windows_says_when_the_next_one_opens_in_local_time() {
        let got = verdict(BERLIN, &office_hours(), &[], at("2026-03-07T11:00Z"));
        assert_eq!(
            got,
            Verdict::Held {
                reason: "outside the deploy windows (next opens Mon 2026-03-09 09:00 Europe/Berlin)".into(),
                until: Some(at("2026-03-09T08:00Z")),
            }
        );
    }

    #[test]
    fn the_time_zone_defaults_to_utc() {
        let windows = [window(&["mon-fri"], "09:00", "17:00")];
        assert_eq!(verdict(None, &windows, &[], at("2026-03-02T09:00Z")), Verdict::Open);
        assert_eq!(
            verdict(None, &windows, &[], at("2026-03-02T08:00Z")),
            Verdict::Held {
                reason: "outside the deploy windows (next opens Mon 2026-03-02 09:00 UTC)".into(),
                until: Some(at("2026-03-02T09:00Z")),
            }
        );
    }

    #[test]
    fn a_window_may_cross_midnight() {
        // Friday 22:00 to Saturday 02:00, UTC. 2026-03-06 is a Friday.
        let windows = [window(&["fri"], "22:00", "02:00")];
        let cases: &[(&str, Option<&str>)] = &[
            ("2026-03-06T21:59Z", Some("2026-03-06T22:00Z")),
            ("2026-03-06T22:00Z", None),
            ("2026-03-06T23:59Z", None),
            ("2026-03-07T01:59Z", None),
            ("2026-03-07T02:00Z", Some("2026-03-13T22:00Z")),
            ("2026-03-05T01:00Z", Some("2026-03-06T22:00Z")),
        ];
        for (now, expected) in cases {
            let got = verdict(None, &windows, &[], at(now));
            match expected {
                None => assert_eq!(got, Verdict::Open, "{now}"),
                Some(expected) => assert_eq!(until(&got), Some(at(expected)), "{now}: {got:?}"),
            }
        }
    }

    #[test]
    fn equal_from_and_to_is_the_whole_day() {
        let windows = [window(&["sat", "sun"], "00:00", "00:00")];
        assert_eq!(verdict(BERLIN, &windows, &[], at("2026-03-07T00:00Z")), Verdict::Open);
        assert_eq!(verdict(BERLIN, &windows, &[], at("2026-03-08T22:59Z")), Verdict::Open);
        // Sunday ends at midnight Berlin time: 23:00Z.
        assert_eq!(
            until(&verdict(BERLIN, &windows, &[], at("2026-03-08T23:00Z"))),
            Some(at("2026-03-13T23:00Z"))
        );
    }

    #[test]
    fn day_ranges_and_names() {
        let cases: &[(&[&str], [bool; 7])] = &[
            (&["mon-fri"], [true, true, true, true, true, false, false]),
            (&["fri-mon"], [true, false, false, false, true, true, true]),
            (
                &["Monday", "WED", " sun "],
                [true, false, true, false, false, false, true],
            ),
            (&["sat-sat"], [false, false, false, false, false, true, false]),
            (&["mon-sun"], [true; 7]),
        ];
        for (specs, expected) in cases {
            let specs: Vec<String> = specs.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(days(&specs).as_ref(), Ok(expected), "{specs:?}");
        }
    }

    #[test]
    fn a_freeze_holds_with_its_reason_until_it_ends() {
        // No windows: deploying resumes the moment the freeze ends (date `to` is inclusive).
        let freezes = [freeze("2026-12-20", "2027-01-04", "end-of-year freeze")];
        let cases: &[(&str, Option<&str>)] = &[
            ("2026-12-19T22:59Z", None),                      // Sat 23:59 CET
            ("2026-12-19T23:00Z", Some("2027-01-04T23:00Z")), // Sun 20th, 00:00 CET
            ("2026-12-24T10:00Z", Some("2027-01-04T23:00Z")),
            ("2027-01-04T22:59Z", Some("2027-01-04T23:00Z")), // the 4th is still frozen
            ("2027-01-04T23:00Z", None),                      // the 5th is not
        ];
        for (now, expected) in cases {
            let got = verdict(BERLIN, &[], &freezes, at(now));
            match expected {
                None => assert_eq!(got, Verdict::Open, "{now}"),
                Some(expected) => assert_eq!(until(&got), Some(at(expected)), "{now}: {got:?}"),
            }
        }
        assert_eq!(
            verdict(BERLIN, &[], &freezes, at("2026-12-24T10:00Z")),
            Verdict::Held {
                reason: "freeze: end-of-year freeze (until Tue 2027-01-05 00:00 Europe/Berlin)".into(),
                until: Some(at("2027-01-04T23:00Z")),
            }
        );
    }

    #[test]
    fn a_freeze_ending_on_a_saturday_holds_until_mondays_window() {
        // Black Friday: Fri 2026-11-27 12:00 to Sat 2026-11-28 08:00, Berlin (CET).
        let freezes = [freeze("2026-11-27T12:00", "2026-11-28T08:00", "Black Friday")];
        let windows = [window(&["mon-fri"], "09:00", "16:00")];
        assert_eq!(
            verdict(BERLIN, &windows, &freezes, at("2026-11-27T10:59Z")),
            Verdict::Open
        );
        assert_eq!(
            verdict(BERLIN, &windows, &freezes, at("2026-11-27T11:00Z")),
            Verdict::Held {
                reason: "freeze: Black Friday (until Sat 2026-11-28 08:00 Europe/Berlin; \
                         deploys resume Mon 2026-11-30 09:00 Europe/Berlin)"
                    .into(),
                until: Some(at("2026-11-30T08:00Z")),
            }
        );
        // After the freeze, on the weekend: just outside the windows.
        assert_eq!(
            until(&verdict(BERLIN, &windows, &freezes, at("2026-11-28T10:00Z"))),
            Some(at("2026-11-30T08:00Z"))
        );
    }

    #[test]
    fn a_freeze_ending_inside_a_window_resumes_at_its_end() {
        let freezes = [freeze("2026-11-27T12:00", "2026-11-30T10:30", "Cyber Monday")];
        let got = verdict(BERLIN, &office_hours(), &freezes, at("2026-11-28T10:00Z"));
        assert_eq!(
            got,
            Verdict::Held {
                reason: "freeze: Cyber Monday (until Mon 2026-11-30 10:30 Europe/Berlin)".into(),
                until: Some(at("2026-11-30T09:30Z")),
            }
        );
    }

    #[test]
    fn the_next_window_inside_a_freeze_does_not_count() {
        // Thursday evening: Monday's window is frozen, so Tuesday's is the next.
        let freezes = [freeze("2026-03-09", "2026-03-09", "release train")];
        let got = verdict(BERLIN, &office_hours(), &freezes, at("2026-03-05T17:00Z"));
        assert_eq!(
            got,
            Verdict::Held {
                reason: "outside the deploy windows (next opens Tue 2026-03-10 09:00 Europe/Berlin)".into(),
                until: Some(at("2026-03-10T08:00Z")),
            }
        );
    }

    #[test]
    fn overlapping_freezes_hold_until_the_last_ends() {
        let freezes = [
            freeze("2026-07-01", "2026-07-03", "migration"),
            freeze("2026-07-03T12:00", "2026-07-06T10:00", "audit"),
            freeze("2026-07-06T09:00", "2026-07-06T11:00", "pen test"),
        ];
        let got = verdict(None, &[], &freezes, at("2026-07-02T00:00Z"));
        assert_eq!(
            got,
            Verdict::Held {
                reason: "freeze: migration (until Sat 2026-07-04 00:00 UTC; deploys resume Mon 2026-07-06 11:00 UTC)"
                    .into(),
                until: Some(at("2026-07-06T11:00Z")),
            }
        );
    }

    #[test]
    fn freezes_use_dates_times_and_the_time_zone() {
        let cases: &[(&str, &str, &str, bool)] = &[
            // from, to, now, frozen?
            ("2026-05-01", "2026-05-01", "2026-04-30T21:59Z", false), // 23:59 CEST on the 30th
            ("2026-05-01", "2026-05-01", "2026-04-30T22:00Z", true),
            ("2026-05-01", "2026-05-01", "2026-05-01T21:59Z", true),
            ("2026-05-01", "2026-05-01", "2026-05-01T22:00Z", false),
            ("2026-05-01T12:00", "2026-05-01T13:00", "2026-05-01T10:00Z", true),
            ("2026-05-01T12:00", "2026-05-01T13:00", "2026-05-01T11:00Z", false),
            ("2026-05-01 12:00", "2026-05-01 13:00:30", "2026-05-01T11:00:29Z", true),
        ];
        for (from, to, now, frozen) in cases {
            let got = verdict(BERLIN, &[], &[freeze(from, to, "x")], at(now));
            assert_eq!(got != Verdict::Open, *frozen, "{from}..{to} at {now}: {got:?}");
        }
    }

    #[test]
    fn an_invalid_policy_holds_everything() {
        let got = verdict(Some("Mars/Olympus"), &[], &[], at("2026-03-02T08:00Z"));
        match got {
            Verdict::Held { reason, until: None } => {
                assert!(
                    reason.starts_with("the deploy windows or freezes are invalid: timezone: "),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// The problem `validate` finds, which it must find.
    fn problem(timezone: Option<&str>, windows: &[Window], freezes: &[Freeze]) -> Problem {
        validate(timezone, windows, freezes).expect_err("the policy is invalid")
    }

    #[test]
    fn validation_names_the_key_and_the_problem() {
        // Each bad window or freeze comes second, after a good one.
        let in_window = |bad: Window| problem(None, &[window(&["mon"], "09:00", "16:00"), bad], &[]);
        let in_freeze = |bad: Freeze| problem(None, &[], &[freeze("2026-12-20", "2027-01-04", "x"), bad]);
        #[rustfmt::skip]
        let cases = [
            (problem(Some("Europe/Berln"), &[], &[]), "timezone", "\"Europe/Berln\" is not a known time zone"),
            (problem(Some(""), &[], &[]), "timezone", "\"\" is not a known time zone"),
            (in_window(window(&[], "09:00", "16:00")), "windows[1].days", "list at least one day"),
            (in_window(window(&["mon", "mnday"], "09:00", "16:00")), "windows[1].days", "\"mnday\" is not a day"),
            (in_window(window(&["mon-", "fri"], "09:00", "16:00")), "windows[1].days", "\"\" is not a day"),
            (in_window(window(&["mon-fri", "wed"], "09:00", "16:00")), "windows[1].days", "wed is listed more than once"),
            (in_window(window(&["mon"], "9am", "16:00")), "windows[1].from", "\"9am\" is not a local time of day"),
            (in_window(window(&["mon"], "09:00", "24:00")), "windows[1].to", "\"24:00\" is not a local time of day"),
            (in_window(window(&["mon"], "09:00Z", "16:00")), "windows[1].from", "is not a local time of day"),
            (in_freeze(freeze("2026-02-30", "2026-03-01", "x")), "freezes[1].from", "\"2026-02-30\" is not a date"),
            (in_freeze(freeze("2026-03-01", "soon", "x")), "freezes[1].to", "\"soon\" is not a date"),
            (in_freeze(freeze("2026-03-01T10:00Z", "2026-03-02", "x")), "freezes[1].from", "is not a date"),
            (in_freeze(freeze("2026-03-02", "2026-03-01", "x")), "freezes[1].to", "the freeze ends (\"2026-03-01\") before"),
            (in_freeze(freeze("2026-03-02T10:00", "2026-03-02T10:00", "x")), "freezes[1].to", "before it starts"),
            (in_freeze(freeze("2026-03-01", "2026-03-02", "  ")), "freezes[1].reason", "say why"),
        ];
        for (problem, key, message) in cases {
            assert_eq!(problem.key, key, "{problem}");
            assert!(problem.message.contains(message), "{problem}");
        }
    }

    #[test]
    fn valid_policies_pass() {
        let windows = [
            window(&["mon-thu"], "09:00", "16:00"),
            window(&["fri"], "22:00", "02:00"),
            window(&["sat"], "00:00", "00:00"),
        ];
        let freezes = [
            freeze("2026-12-20", "2027-01-04", "end-of-year freeze"),
            freeze("2026-11-27T12:00", "2026-11-28T08:00", "Black Friday"),
            freeze("2026-05-01", "2026-05-01", "one day"),
        ];
        assert_eq!(validate(BERLIN, &windows, &freezes), Ok(()));
        assert_eq!(validate(None, &[], &[]), Ok(()));
        assert_eq!(validate(Some("UTC"), &[], &[]), Ok(()));
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Env {
        timezone: Option<String>,
        #[serde(default)]
        windows: Vec<Window>,
        #[serde(default)]
        freezes: Vec<Freeze>,
    }

    #[test]
    fn the_toml_format() {
        let env: Env = toml::from_str(
            r#"
            timezone = "Europe/Berlin"
            windows = [
              { days = ["mon-thu"], from = "09:00", to = "16:00" },
              { days = ["fri"], from = 09:00:00, to = 12:00:00 },
            ]
            freezes = [
              { from = "2026-12-20", to = "2027-01-04", reason = "end-of-year freeze" },
              { from = 2026-11-27T12:00:00, to = 2026-11-28T08:00:00, reason = "Black Friday" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(validate(env.timezone.as_deref(), &env.windows, &env.freezes), Ok(()));
        assert_eq!(env.windows[1].from, "09:00:00");
        assert_eq!(env.freezes[1].to, "2026-11-28T08:00:00");
        let got = verdict(
            env.timezone.as_deref(),
            &env.windows,
            &env.freezes,
            at("2026-11-27T11:30Z"),
        );
        assert_eq!(until(&got), Some(at("2026-11-30T08:00Z")));

        for wrong in [
            r#"windows = [{ days = ["mon"], from = "09:00", to = "16:00", tz = "UTC" }]"#,
            r#"freezes = [{ from = "2026-12-20", to = "2027-01-04" }]"#,
            r#"freezes = [{ from = 20261220, to = "2027-01-04", reason = "x" }]"#,
        ] {
            assert!(toml::from_str::<Env>(wrong).is_err(), "{wrong}");
        }
    }
}
