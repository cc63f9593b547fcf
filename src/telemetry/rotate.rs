//! Daily log files that keep their plain names.
//!
//! Operators `tail data/logs/app.log`; tracing-appender's rolling writer would
//! only ever write `app.log.2026-01-15`. This writer always writes `app.log`
//! and, at the first write of a new day, renames yesterday's file to
//! `app.2026-01-15.log` (which the retention actor later gzips and deletes).

use chrono::{DateTime, Local, NaiveDate};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Today's date, injectable for tests.
pub type Today = Box<dyn Fn() -> NaiveDate + Send>;

pub struct DailyFile {
    dir: PathBuf,
    stem: String,
    day: NaiveDate,
    file: File,
    today: Today,
}

impl DailyFile {
    /// Opens `dir/stem.log` for appending, first rotating it away if it was
    /// last written on an earlier day.
    pub fn open(dir: &Path, stem: &str) -> io::Result<Self> {
        Self::with_today(dir, stem, Box::new(|| Local::now().date_naive()))
    }

    pub fn with_today(dir: &Path, stem: &str, today: Today) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{stem}.log"));
        let now = today();
        if let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            let written: NaiveDate = DateTime::<Local>::from(modified).date_naive();
            if written < now {
                rename_aside(dir, stem, written)?;
            }
        }
        Ok(Self { file: append(&path)?, dir: dir.to_owned(), stem: stem.to_owned(), day: now, today })
    }

    fn rotate_if_new_day(&mut self) -> io::Result<()> {
        let now = (self.today)();
        if now != self.day {
            self.file.flush()?;
            rename_aside(&self.dir, &self.stem, self.day)?;
            self.file = append(&self.dir.join(format!("{}.log", self.stem)))?;
            self.day = now;
        }
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `stem.log` becomes `stem.DAY.log`, or `stem.DAY.N.log` if that is taken.
fn rename_aside(dir: &Path, stem: &str, day: NaiveDate) -> io::Result<()> {
    let from = dir.join(format!("{stem}.log"));
    let mut to = dir.join(format!("{stem}.{day}.log"));
    let mut n = 1;
    while to.exists() {
        to = dir.join(format!("{stem}.{day}.{n}.log"));
        n += 1;
    }
    std::fs::rename(from, to)
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.rotate_if_new_day()?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[test]
    fn rotates_at_the_first_write_of_a_new_day() {
        let dir = tempfile::tempdir().unwrap();
        let offset = Arc::new(AtomicI64::new(0));
        let base = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
        let o = offset.clone();
        let mut file = DailyFile::with_today(
            dir.path(),
            "app",
            Box::new(move || base + chrono::Days::new(o.load(Ordering::SeqCst) as u64)),
        )
        .unwrap();
        file.write_all(b"day one\n").unwrap();
        offset.store(1, Ordering::SeqCst);
        file.write_all(b"day two\n").unwrap();
        file.flush().unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("app.2026-01-15.log"), "day one\n");
        assert_eq!(read("app.log"), "day two\n");
    }
}
