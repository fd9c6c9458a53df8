//! The terminal side of `kiln chat`: reading messages and commands, streaming answers.
//!
//! On a terminal: line editing and history (rustyline), Ctrl-C stops the answer being written,
//! Ctrl-D exits. With stdin not a terminal: one message per line, each answer printed on stdout
//! followed by a newline, and nothing else on stdout (notices and command output go to stderr).
//!
//! Input: a line ending with `\` continues on the next line; a line holding only `"""` starts a
//! block that the next such line ends. A message starting with `//` is sent with one `/` less.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::Editor;

use super::session::{Engine, Event, Session, SessionError, Stop};
use crate::tokenizer::Tokenizer;

/// Raised by Ctrl-C while an answer is being written.
static STOP: AtomicBool = AtomicBool::new(false);

pub const HELP: &str = r#"Commands:
  /help            this help
  /exit            leave (Ctrl-D does the same)
  /clear           forget the conversation (the system prompt stays)
  /regen           write the last answer again
  /system [TEXT]   show the system prompt, or set it (/system - removes it)
  /stats           turns, cache use, tokens evaluated and speeds of the last turn
  /save FILE       write the conversation and settings as JSON
  /load FILE       continue a conversation written by /save
Input: end a line with \ to continue on the next one; a line with only """ starts and ends a
block. Start a message with // to send text beginning with /.
Ctrl-C stops an answer; Ctrl-D exits."#;

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("terminal: {0}")]
    Io(#[from] io::Error),
    #[error("line editor: {0}")]
    Readline(#[from] ReadlineError),
    #[error("cannot install the Ctrl-C handler: {0}")]
    Signal(#[from] ctrlc::Error),
    #[error("{0} of the piped messages failed (see the errors above)")]
    PipedFailures(usize),
}

/// What the REPL needs besides the session.
pub struct ReplOptions {
    /// Shown once on a terminal, e.g. the model's name and context size.
    pub banner: String,
    /// Where line history is kept (`None`: not kept).
    pub history: Option<PathBuf>,
}

/// A command typed at the prompt.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Exit,
    Clear,
    Regen,
    /// `/system` (show), `/system -` (remove), `/system TEXT` (set).
    System(Option<String>),
    Stats,
    Save(PathBuf),
    Load(PathBuf),
}

/// What one input is: a command, a message, or a mistake to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Command(Command),
    Message(String),
    Invalid(String),
}

/// Classifies a complete input (after multi-line joining).
pub fn parse_input(text: &str) -> Input {
    if let Some(rest) = text.strip_prefix("//") {
        return Input::Message(format!("/{rest}"));
    }
    let Some(cmd) = text.strip_prefix('/') else {
        return Input::Message(text.to_string());
    };
    let (name, arg) = match cmd.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (cmd.trim_end(), ""),
    };
    let need_file = |make: fn(PathBuf) -> Command| {
        if arg.is_empty() {
            Input::Invalid(format!("/{name} needs a file name"))
        } else {
            Input::Command(make(PathBuf::from(arg)))
        }
    };
    match name {
        "help" | "?" => Input::Command(Command::Help),
        "exit" | "quit" => Input::Command(Command::Exit),
        "clear" => Input::Command(Command::Clear),
        "regen" => Input::Command(Command::Regen),
        "stats" => Input::Command(Command::Stats),
        "system" => Input::Command(Command::System((!arg.is_empty()).then(|| arg.to_string()))),
        "save" => need_file(Command::Save),
        "load" => need_file(Command::Load),
        _ => Input::Invalid(format!(
            "unknown command /{name} (/help lists them; start with // to send a message beginning with /)"
        )),
    }
}

/// Where lines come from: the line editor or plain stdin.
trait Lines {
    /// The next line; `Ok(None)` at end of input. `Err(Interrupted)` when Ctrl-C cancelled it.
    fn line(&mut self, prompt: &str) -> Result<Option<String>, ReadlineError>;
    /// Keeps `text` in the history (and its file), where there is one.
    fn remember(&mut self, _text: &str, _file: Option<&Path>) {}
}

struct Piped<R>(R);

impl<R: BufRead> Lines for Piped<R> {
    fn line(&mut self, _prompt: &str) -> Result<Option<String>, ReadlineError> {
        let mut s = String::new();
        if self.0.read_line(&mut s)? == 0 {
            return Ok(None);
        }
        let end = s.trim_end_matches(['\n', '\r']).len();
        s.truncate(end);
        Ok(Some(s))
    }
}

struct Terminal(Editor<(), FileHistory>);

impl Lines for Terminal {
    fn line(&mut self, prompt: &str) -> Result<Option<String>, ReadlineError> {
        match self.0.readline(prompt) {
            Ok(s) => Ok(Some(s)),
            Err(ReadlineError::Eof) => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn remember(&mut self, text: &str, file: Option<&Path>) {
        if !matches!(self.0.add_history_entry(text), Ok(true)) {
            return;
        }
        if let Some(f) = file {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // History is a convenience: a read-only data dir must not stop the chat.
            let _ = self.0.append_history(f);
        }
    }
}

/// Reads one input, joining `\`-continued lines and `"""` blocks. `Ok(None)` at end of input.
fn read_input(lines: &mut dyn Lines) -> Result<Option<String>, ReadlineError> {
    let Some(first) = lines.line("> ")? else {
        return Ok(None);
    };
    if first.trim() == r#"""""# {
        let mut block = Vec::new();
        while let Some(l) = lines.line("... ")? {
            if l.trim() == r#"""""# {
                break;
            }
            block.push(l);
        }
        return Ok(Some(block.join("\n")));
    }
    let mut text = first;
    while text.ends_with('\\') {
        text.pop();
        text.push('\n');
        match lines.line("... ")? {
            Some(l) => text.push_str(&l),
            None => break,
        }
    }
    Ok(Some(text))
}

/// The `/stats` report.
pub fn stats_text(session: &Session, n_ctx: usize) -> String {
    let s = session.stats();
    let rate = |n: usize, t: std::time::Duration| n as f64 / t.as_secs_f64().max(1e-9);
    format!(
        "turns: {}\n\
         tokens in cache: {} / {n_ctx}\n\
         last prompt: {} tokens, {} reused from the cache, {} evaluated in {:.2} s ({:.1} tokens/s)\n\
         last answer: {} tokens generated in {:.2} s ({:.1} tokens/s)\n\
         prompt tokens evaluated since the start: {}",
        session.turns(),
        session.cached_tokens().len(),
        s.prompt_tokens,
        s.prompt_reused,
        s.prompt_evaluated,
        s.prompt_time.as_secs_f64(),
        rate(s.prompt_evaluated, s.prompt_time),
        s.generated,
        s.gen_time.as_secs_f64(),
        rate(s.generated, s.gen_time),
        s.total_evaluated,
    )
}

/// Runs the chat until `/exit` or end of input.
pub fn run(
    session: &mut Session,
    engine: &mut impl Engine,
    tok: &Tokenizer,
    opts: &ReplOptions,
) -> Result<(), ReplError> {
    let interactive = io::stdin().is_terminal();
    let mut ui = Ui {
        interactive,
        dim: io::stderr().is_terminal(),
        failures: 0,
    };
    let mut lines: Box<dyn Lines> = if interactive {
        ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed))?;
        let config = rustyline::Config::builder().auto_add_history(false).build();
        let mut editor = Editor::with_config(config)?;
        if let Some(h) = &opts.history {
            let _ = editor.load_history(h); // absent on first use
        }
        ui.notice(&opts.banner);
        ui.notice("type /help for commands; Ctrl-C stops an answer, Ctrl-D exits");
        Box::new(Terminal(editor))
    } else {
        Box::new(Piped(io::stdin().lock()))
    };

    loop {
        let text = match read_input(lines.as_mut()) {
            Ok(Some(t)) => t,
            Ok(None) => break,
            Err(ReadlineError::Interrupted) => {
                ui.notice("(Ctrl-D or /exit to leave)");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if text.trim().is_empty() {
            continue;
        }
        lines.remember(&text, opts.history.as_deref());
        match parse_input(&text) {
            Input::Invalid(why) => ui.error(&why),
            Input::Message(m) => {
                session.push_user(m);
                answer(session, engine, tok, &mut ui)?;
            }
            Input::Command(Command::Exit) => break,
            Input::Command(Command::Regen) => match session.prepare_regen() {
                Ok(()) => answer(session, engine, tok, &mut ui)?,
                Err(e) => ui.error(&e.to_string()),
            },
            Input::Command(c) => command(c, session, engine.n_ctx(), &mut ui)?,
        }
    }
    if interactive {
        println!();
    }
    match ui.failures {
        0 => Ok(()),
        n if !interactive => Err(ReplError::PipedFailures(n)),
        _ => Ok(()),
    }
}

/// Output rules: answers on stdout; notices on stderr; command output on stdout on a
/// terminal and on stderr when piped.
struct Ui {
    interactive: bool,
    dim: bool,
    failures: usize,
}

impl Ui {
    fn notice(&self, msg: &str) {
        if self.dim {
            eprintln!("\x1b[2m{msg}\x1b[0m");
        } else {
            eprintln!("{msg}");
        }
    }
    fn error(&mut self, msg: &str) {
        self.failures += 1;
        eprintln!("error: {msg}");
    }
    fn say(&self, msg: &str) -> io::Result<()> {
        if self.interactive {
            let mut out = io::stdout().lock();
            writeln!(out, "{msg}")?;
            out.flush()
        } else {
            eprintln!("{msg}");
            Ok(())
        }
    }
}

fn command(c: Command, s: &mut Session, n_ctx: usize, ui: &mut Ui) -> Result<(), ReplError> {
    match c {
        Command::Help => ui.say(HELP)?,
        Command::Clear => {
            s.clear();
            ui.say("conversation cleared")?;
        }
        Command::System(None) => match s.system() {
            Some(t) => ui.say(&format!("system prompt: {t}"))?,
            None => ui.say("no system prompt (the template's default applies, if it has one)")?,
        },
        Command::System(Some(t)) if t == "-" => {
            s.set_system(None);
            ui.say("system prompt removed")?;
        }
        Command::System(Some(t)) => {
            s.set_system(Some(t));
            ui.say("system prompt set")?;
        }
        Command::Stats => ui.say(&stats_text(s, n_ctx))?,
        Command::Save(p) => match s.save(&p) {
            Ok(()) => ui.say(&format!(
                "saved {} messages to {}",
                s.messages().len(),
                p.display()
            ))?,
            Err(e) => ui.error(&e.to_string()),
        },
        Command::Load(p) => match s.load(&p) {
            Ok(()) => ui.say(&format!(
                "loaded {} messages from {}",
                s.messages().len(),
                p.display()
            ))?,
            Err(e) => ui.error(&e.to_string()),
        },
        Command::Exit | Command::Regen => {}
    }
    Ok(())
}

/// Answers the last message, streaming it to stdout.
fn answer(
    session: &mut Session,
    engine: &mut impl Engine,
    tok: &Tokenizer,
    ui: &mut Ui,
) -> Result<(), ReplError> {
    STOP.store(false, Ordering::Relaxed);
    let mut out = io::stdout().lock();
    let mut decoder = tok.stream_decoder();
    let mut write_err: Option<io::Error> = None;
    let mut started = false;
    let dim = ui.dim;
    let result = session.respond(engine, tok, &STOP, &mut |ev| match ev {
        Event::Token(id) => {
            started = true;
            let piece = decoder.push(id);
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_err.get_or_insert(e);
                STOP.store(true, Ordering::Relaxed);
            }
        }
        Event::Notice(n) => {
            if started {
                let _ = writeln!(out);
                let _ = out.flush();
            }
            if dim {
                eprintln!("\x1b[2m{n}\x1b[0m");
            } else {
                eprintln!("{n}");
            }
        }
    });
    out.write_all(decoder.flush().as_bytes())?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    match result {
        Ok(reply) => {
            writeln!(out)?;
            out.flush()?;
            drop(out);
            if reply.stop == Stop::Interrupted {
                ui.notice("(answer stopped)");
            }
        }
        Err(e) => {
            if started {
                writeln!(out)?;
            }
            drop(out);
            report(ui, &e);
        }
    }
    Ok(())
}

fn report(ui: &mut Ui, e: &SessionError) {
    ui.error(&e.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Vec<String> {
        let mut lines = Piped(text.as_bytes());
        std::iter::from_fn(|| read_input(&mut lines).unwrap()).collect()
    }

    #[test]
    fn continued_lines_and_blocks_make_one_message() {
        let got = read_all("one \\\ntwo\\\nthree\nsolo\n\"\"\"\na\n\n  b\n\"\"\"\nlast");
        assert_eq!(got, ["one \ntwo\nthree", "solo", "a\n\n  b", "last"]);
    }

    #[test]
    fn commands_and_messages() {
        use Command::*;
        let cmd = |s: &str| match parse_input(s) {
            Input::Command(c) => c,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(cmd("/help"), Help);
        assert_eq!(cmd("/exit"), Exit);
        assert_eq!(cmd("/clear"), Clear);
        assert_eq!(cmd("/regen"), Regen);
        assert_eq!(cmd("/stats"), Stats);
        assert_eq!(cmd("/system"), System(None));
        assert_eq!(cmd("/system  Be brief. "), System(Some("Be brief.".into())));
        assert_eq!(cmd("/save a b.json"), Save("a b.json".into()));
        assert_eq!(cmd("/load x.json"), Load("x.json".into()));
        assert!(matches!(parse_input("/save"), Input::Invalid(_)));
        assert!(matches!(parse_input("/frobnicate"), Input::Invalid(_)));
        assert_eq!(
            parse_input("//etc is a folder"),
            Input::Message("/etc is a folder".into())
        );
        assert_eq!(parse_input("hello /x"), Input::Message("hello /x".into()));
    }
}
