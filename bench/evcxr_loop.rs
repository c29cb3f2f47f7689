//! The peer of `bench/rust_bench.py`: a bare evcxr `CommandContext` loop with no kernel around it
//! (evcxr_repl's core, without its line editor). Reads one cell per stdin line (`\n` written as
//! the two characters `\n`), evaluates it, and answers `OK <text/plain>` or `ERR <message>` on one
//! line. Built with `cargo build -p carbon-kernel --example evcxr_loop`.

use std::io::{BufRead, Write};

fn main() {
    // evcxr re-executes this binary as its child, exactly as it does with the kernel.
    evcxr::runtime_hook();
    let (mut ctx, outputs) = match evcxr::CommandContext::new() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("evcxr did not start: {e}");
            std::process::exit(1);
        }
    };
    // The child's output lines must be consumed, as evcxr_repl does; the bench ignores them.
    for rx in [outputs.stdout, outputs.stderr] {
        std::thread::spawn(move || while rx.recv().is_ok() {});
    }
    println!("READY");
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let cell = line.replace("\\n", "\n");
        let answer = match ctx.execute(&cell) {
            Ok(out) => format!("OK {}", out.get("text/plain").unwrap_or("")),
            Err(e) => format!("ERR {}", e.to_string().replace('\n', " ")),
        };
        let _ = writeln!(stdout, "{answer}");
        let _ = stdout.flush();
    }
}
