//! carbon-kernel binary: thin CLI over the library.
//!
//! `carbon-kernel run --connection-file F [--language python|java|rust]` serves a Jupyter
//! front-end; `install` / `uninstall` manage the kernelspecs.

use anyhow::{Context, Result, bail};
use carbon_kernel::cli::install::{self, InstallArgs};
use carbon_kernel::cli::{magics, report};
use carbon_kernel::runtime::{Language, test_runtime::TestRuntime};
use carbon_kernel::server::{self, ServerConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "carbon-kernel",
    version,
    about = "A Jupyter kernel that meters the energy and CO₂ of every cell"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a Jupyter front-end (what kernel.json runs).
    Run(RunArgs),
    /// Write the kernelspecs carbon, carbon-java and carbon-rust.
    Install(InstallArgs),
    /// Remove the kernelspecs.
    Uninstall(InstallArgs),
    /// Merge emissions.csv files into totals and a self-contained HTML report.
    Report(report::ReportArgs),
    /// List the magics (`--markdown`: the README reference).
    Magics(magics::MagicsArgs),
    /// (internal) Outlive a `kill -9` of the kernel with this pid and end what it started.
    #[command(hide = true)]
    Guard {
        /// The kernel's pid.
        pid: u32,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Connection file written by the front-end.
    #[arg(short = 'f', long = "connection-file", value_name = "FILE")]
    connection_file: Option<PathBuf>,
    /// Connection file (positional form).
    #[arg(value_name = "CONNECTION_FILE", conflicts_with = "connection_file")]
    positional: Option<PathBuf>,
    /// Language of plain cells.
    #[arg(long, default_value = "python", value_parser = Language::names())]
    language: String,
    /// Use the scripted test runtime (same as CARBON_TEST_RUNTIME=1).
    #[arg(long, hide = true)]
    test_runtime: bool,
}

fn run(args: RunArgs) -> Result<()> {
    let Some(path) = args.connection_file.or(args.positional) else {
        bail!("no connection file: use `carbon-kernel run --connection-file FILE`");
    };
    let connection = server::load_connection_file(&path)?;
    let language = Language::parse(&args.language).context("unknown language")?;
    let test = args.test_runtime || std::env::var("CARBON_TEST_RUNTIME").as_deref() == Ok("1");
    let factory = if test {
        TestRuntime::factory()
    } else {
        carbon_kernel::runtime::default_factory()
    };
    let workdir = std::env::current_dir().context("cannot read the current directory")?;
    // One thread for the sockets: user code runs on the executor thread and nothing on this
    // runtime blocks (shell awaits the executor), so control stays answered while a cell runs
    // (the heartbeat has a thread of its own: server::spawn_heartbeat). Two workers woke each
    // other several times a cell (work stealing): on one thread a `pass` cell switches threads
    // 3.4-4.2 times fewer and costs 10 % less CPU (bench/kernel_bench-results.md, stop 21).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Orphans of cell processes (`sh -c 'x &'`, daemons) come back to the kernel, which finds
    // and ends them on interrupt, timeout and shutdown; a guard process ends them after a
    // `kill -9` of the kernel.
    carbon_kernel::runtime::child::become_subreaper();
    let metrics = carbon_kernel::metrics::start(rt.handle(), &path, &workdir);
    let exit = rt.block_on(server::serve(ServerConfig {
        connection,
        language,
        workdir,
        factory,
    }))?;
    log::info!("kernel exiting: {exit:?}");
    // Nothing a cell started outlives the kernel (runtimes already stopped by the shutdown).
    carbon_kernel::runtime::child::end_all_processes();
    drop(metrics); // removes this kernel's Prometheus file_sd target
    // Do not wait for a runtime that ignores shutdown: the process ends here.
    std::process::exit(0);
}

fn main() -> ExitCode {
    // evcxr re-executes this binary as its runtime child; the hook must run before anything else.
    carbon_kernel::runtime::rust::child_hook();
    evcxr::runtime_hook();
    // usvg warns about every empty shape of a chart it rasterizes for the PNG (a stacked bar
    // part under a pixel in `%carbon summary`: nothing to draw, nothing wrong), ten lines a
    // summary in the server's log; CARBON_LOG set to anything shows them again
    env_logger::Builder::from_env(
        env_logger::Env::new().filter_or("CARBON_LOG", "warn,usvg=error"),
    )
    // every log line goes through the one redaction layer (a logged message may quote a key)
    .format(|buf, record| {
        use std::io::Write;
        let msg = record.args().to_string();
        writeln!(
            buf,
            "[{} {} {}] {}",
            buf.timestamp(),
            record.level(),
            record.target(),
            carbon_magics::redact::redact(&msg)
        )
    })
    .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run(a),
        Command::Install(a) => std::env::current_exe()
            .context("cannot find this binary's path")
            .and_then(|exe| {
                let exe = exe.canonicalize().unwrap_or(exe);
                Ok(install::run_install(&a, &exe, &mut std::io::stdout())?)
            }),
        Command::Uninstall(a) => {
            install::run_uninstall(&a, &mut std::io::stdout()).map_err(Into::into)
        }
        Command::Report(a) => report::run_report(&a, &mut std::io::stdout())
            .map(drop)
            .map_err(Into::into),
        Command::Magics(a) => magics::run_magics(&a, &mut std::io::stdout()).map_err(Into::into),
        Command::Guard { pid } => {
            carbon_kernel::runtime::child::run_guard(pid);
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carbon-kernel: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
