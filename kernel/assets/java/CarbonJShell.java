/*
 * carbon-kernel's Java helper: one persistent JShell (jdk.jshell API), driven by the kernel over
 * this process's stdin/stdout. Embedded in the kernel binary (kernel/src/runtime/java.rs) and
 * compiled with `javac --release 17` into a cache folder on first use.
 *
 * Wire format, both directions: frames `KIND LEN\n` followed by LEN bytes of UTF-8 payload.
 *
 *   kernel -> helper: EXEC code | COMPLETE cursor\ncode | ISCOMPLETE code |
 *                     INSPECT cursor\ndetail\ncode | INPUT line | NOINPUT | STOP | QUIT
 *                     (cursors count UTF-16 units, Java's String indices)
 *   helper -> kernel: READY json | OUT text | ERR text | PHASE compile|run | INPUT json |
 *                     DONE json | REPLY json
 *
 * User code's System.out/err/in are replaced: output is buffered for a short window and sent as
 * OUT/ERR frames by one flusher thread (so a flood becomes few large frames, and a user thread that
 * is stopped mid-print can never leave half a frame on the wire); reading System.in asks the kernel
 * for a line (Jupyter's input_request). Only this helper writes to the real stdout.
 */

import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.LinkedBlockingQueue;
import jdk.jshell.DeclarationSnippet;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import jdk.jshell.execution.JdiExecutionControlProvider;
import jdk.jshell.execution.LocalExecutionControlProvider;
import jdk.jshell.spi.ExecutionControl;
import jdk.jshell.spi.ExecutionControlProvider;
import jdk.jshell.spi.ExecutionEnv;

public final class CarbonJShell {

    /** The imports the jshell tool evaluates at start (its DEFAULT startup script), so cells see
     * the same names as in `jshell`. */
    private static final String[] DEFAULT_IMPORTS = {
        "java.io.*", "java.math.*", "java.net.*", "java.nio.file.*", "java.util.*",
        "java.util.concurrent.*", "java.util.function.*", "java.util.prefs.*",
        "java.util.regex.*", "java.util.stream.*",
    };

    /** Where the display callback is published for snippets. */
    private static final String DISPLAY_KEY = "carbon.display";

    /** Methods every cell can call (local engine): rich output like IPython's display(). Each
     * body calls the callback itself: in JShell an overload cannot call its sibling (each
     * method lives in its own wrapper class, where the name finds only itself). */
    private static final String CALLBACK =
            "((java.util.function.BiConsumer<String, Object>) System.getProperties().get(\""
                    + DISPLAY_KEY + "\"))";
    private static final String[] DISPLAY_API = {
        "void display(String mime, Object data) { " + CALLBACK + ".accept(mime, data); }",
        "void display(Object value) { " + CALLBACK + ".accept(\"text/plain\", value); }",
        "void clearOutput() { " + CALLBACK + ".accept(\"\", null); }",
    };

    /** A frame read from the kernel. */
    record Frame(String kind, String text) {}

    // ---- the wire to the kernel ------------------------------------------------------------

    /** Frames to the kernel; the only writer of the real stdout. */
    static final class Wire {
        private final OutputStream out;

        Wire(OutputStream out) {
            this.out = out;
        }

        synchronized void send(String kind, byte[] payload) {
            try {
                byte[] head = (kind + " " + payload.length + "\n").getBytes(StandardCharsets.US_ASCII);
                byte[] frame = new byte[head.length + payload.length];
                System.arraycopy(head, 0, frame, 0, head.length);
                System.arraycopy(payload, 0, frame, head.length, payload.length);
                out.write(frame);
                out.flush();
            } catch (IOException e) {
                // The kernel is gone: nobody can see anything we do any more.
                Runtime.getRuntime().halt(0);
            }
        }

        void send(String kind, String payload) {
            send(kind, payload.getBytes(StandardCharsets.UTF_8));
        }
    }

    static Frame readFrame(InputStream in) throws IOException {
        StringBuilder header = new StringBuilder();
        while (true) {
            int c = in.read();
            if (c < 0) {
                return null;
            }
            if (c == '\n') {
                break;
            }
            header.append((char) c);
        }
        String h = header.toString();
        int sp = h.indexOf(' ');
        if (sp < 0) {
            throw new IOException("bad frame header: " + h);
        }
        int len = Integer.parseInt(h.substring(sp + 1).trim());
        byte[] payload = in.readNBytes(len);
        if (payload.length != len) {
            return null;
        }
        return new Frame(h.substring(0, sp), new String(payload, StandardCharsets.UTF_8));
    }

    // ---- user output: buffered, sent by one flusher thread ---------------------------------

    /** Output of user code (both streams and displays, in the order written). */
    static final class UserOutput {
        /** Coalescing window: output reaches the notebook at most this late, and a flood of
         * println calls becomes one frame per window instead of one per call. */
        private static final long WINDOW_MS = 15;
        /** Frame size cap: writers wait (backpressure) above it, so memory stays bounded. */
        private static final int MAX = 1 << 16;

        private final Wire wire;
        private final ByteArrayOutputStream buf = new ByteArrayOutputStream();
        /** Frames ready to send, in order: {kind, payload}. */
        private final java.util.ArrayDeque<Object[]> ready = new java.util.ArrayDeque<>();
        private String kind = "OUT";
        private boolean urgent;
        private boolean sending;

        UserOutput(Wire wire) {
            this.wire = wire;
        }

        /** Waits without giving up on interrupts (so no output is dropped). */
        private boolean waitQuietly(long ms) {
            try {
                if (ms > 0) {
                    wait(ms);
                } else {
                    wait();
                }
                return false;
            } catch (InterruptedException e) {
                return true;
            }
        }

        /** Moves the bytes written so far into a ready frame. */
        private void cut() {
            if (buf.size() > 0) {
                ready.add(new Object[] {kind, buf.toByteArray()});
                buf.reset();
            }
        }

        synchronized void write(String k, byte[] b, int off, int len) {
            boolean interrupted = false;
            while (buf.size() >= MAX || ready.size() > 8) {
                urgent = true;
                notifyAll();
                interrupted |= waitQuietly(0);
            }
            if (!kind.equals(k)) {
                cut();
                kind = k;
            }
            buf.write(b, off, len);
            notifyAll();
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }

        /** Queues a frame of another kind (a display) after what was written so far. */
        synchronized void post(String k, byte[] payload) {
            cut();
            ready.add(new Object[] {k, payload});
            urgent = true;
            notifyAll();
        }

        /** Sends everything written so far before returning (at most `maxMs`). */
        synchronized void drain(long maxMs) {
            long end = System.currentTimeMillis() + maxMs;
            urgent = true;
            notifyAll();
            boolean interrupted = false;
            while (buf.size() > 0 || !ready.isEmpty() || sending) {
                long left = end - System.currentTimeMillis();
                if (left <= 0) {
                    break;
                }
                interrupted |= waitQuietly(left);
            }
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }

        /** The only sender of user output: user threads never write to the wire themselves, so
         * a thread stopped mid-print cannot leave half a frame behind. */
        void flusherLoop() {
            while (true) {
                List<Object[]> batch = new ArrayList<>();
                synchronized (this) {
                    while (buf.size() == 0 && ready.isEmpty()) {
                        waitQuietly(0);
                    }
                    long end = System.currentTimeMillis() + WINDOW_MS;
                    while (!urgent && buf.size() < MAX) {
                        long left = end - System.currentTimeMillis();
                        if (left <= 0) {
                            break;
                        }
                        waitQuietly(left);
                    }
                    cut();
                    batch.addAll(ready);
                    ready.clear();
                    urgent = false;
                    sending = true;
                    notifyAll();
                }
                for (Object[] f : batch) {
                    wire.send((String) f[0], (byte[]) f[1]);
                }
                synchronized (this) {
                    sending = false;
                    notifyAll();
                }
            }
        }
    }

    /** One stream (stdout or stderr) of user code. */
    static final class UserStream extends OutputStream {
        private final UserOutput sink;
        private final String kind;

        UserStream(UserOutput sink, String kind) {
            this.sink = sink;
            this.kind = kind;
        }

        @Override
        public void write(int b) {
            sink.write(kind, new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) {
            if (len > 0) {
                sink.write(kind, b, off, len);
            }
        }
    }

    /** System.in of user code: each line is asked from the front-end (input_request). */
    final class UserInput extends InputStream {
        private byte[] cur = new byte[0];
        private int pos;

        private boolean fill() {
            if (pos < cur.length) {
                return true;
            }
            if (!busy) {
                return false; // no cell to ask on behalf of
            }
            output.drain(1000);
            wire.send("INPUT", "{\"prompt\":\"\",\"password\":false}");
            Frame f;
            try {
                f = inputReplies.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            }
            if (!f.kind().equals("INPUT")) {
                return false;
            }
            cur = (f.text() + "\n").getBytes(StandardCharsets.UTF_8);
            pos = 0;
            return true;
        }

        @Override
        public synchronized int read() {
            return fill() ? cur[pos++] & 0xff : -1;
        }

        @Override
        public synchronized int read(byte[] b, int off, int len) {
            if (len == 0) {
                return 0;
            }
            if (!fill()) {
                return -1;
            }
            int n = Math.min(len, cur.length - pos);
            System.arraycopy(cur, pos, b, off, n);
            pos += n;
            return n;
        }

        @Override
        public synchronized int available() {
            return cur.length - pos;
        }
    }

    // ---- compile/run phase marks -----------------------------------------------------------

    /** Wraps the engine so the kernel learns when JShell stops compiling and starts running. */
    final class PhasedProvider implements ExecutionControlProvider {
        private final ExecutionControlProvider base;

        PhasedProvider(ExecutionControlProvider base) {
            this.base = base;
        }

        @Override
        public String name() {
            return "carbon-" + base.name();
        }

        @Override
        public Map<String, String> defaultParameters() {
            return base.defaultParameters();
        }

        @Override
        public ExecutionControl generate(ExecutionEnv env, Map<String, String> params)
                throws Throwable {
            return new PhasedControl(base.generate(env, params));
        }
    }

    final class PhasedControl implements ExecutionControl {
        private final ExecutionControl d;

        PhasedControl(ExecutionControl d) {
            this.d = d;
        }

        @Override
        public void load(ClassBytecodes[] cbcs)
                throws ClassInstallException, NotImplementedException, EngineTerminationException {
            d.load(cbcs);
        }

        @Override
        public void redefine(ClassBytecodes[] cbcs)
                throws ClassInstallException, NotImplementedException, EngineTerminationException {
            d.redefine(cbcs);
        }

        @Override
        public String invoke(String className, String methodName)
                throws RunException, EngineTerminationException, InternalException {
            phase("run");
            return d.invoke(className, methodName);
        }

        @Override
        public String varValue(String className, String varName)
                throws RunException, EngineTerminationException, InternalException {
            return d.varValue(className, varName);
        }

        @Override
        public void addToClasspath(String path)
                throws EngineTerminationException, InternalException {
            d.addToClasspath(path);
        }

        @Override
        public void stop() throws EngineTerminationException, InternalException {
            d.stop();
        }

        @Override
        public Object extensionCommand(String command, Object arg)
                throws RunException, EngineTerminationException, InternalException {
            return d.extensionCommand(command, arg);
        }

        @Override
        public void close() {
            d.close();
        }
    }

    // ---- state -----------------------------------------------------------------------------

    /** Where a snippet's source sits in the cell it came from. */
    record Loc(int cell, int firstLine) {}

    final Wire wire;
    final UserOutput output;
    final LinkedBlockingQueue<Frame> requests = new LinkedBlockingQueue<>();
    final LinkedBlockingQueue<Frame> inputReplies = new LinkedBlockingQueue<>();
    final Map<String, Loc> locations = new HashMap<>();
    volatile JShell shell;
    SourceCodeAnalysis sca;
    volatile boolean busy;
    volatile boolean stopRequested;
    volatile boolean shellClosed;
    String lastPhase;
    int cellNo;

    CarbonJShell(Wire wire) {
        this.wire = wire;
        this.output = new UserOutput(wire);
    }

    /** Ids of the snippets the helper evaluates at start (hidden from /list, as jshell's
     * start-up snippets are). */
    final Set<String> startupIds = new java.util.HashSet<>();

    void startup(List<SnippetEvent> events) {
        for (SnippetEvent ev : events) {
            startupIds.add(ev.snippet().id());
        }
    }

    void phase(String p) {
        if (!p.equals(lastPhase)) {
            lastPhase = p;
            output.drain(1000);
            wire.send("PHASE", p);
        }
    }

    public static void main(String[] args) throws Exception {
        Wire wire =
                new Wire(new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16));
        new CarbonJShell(wire).run(args);
    }

    void run(String[] args) throws Exception {
        // jupyter_client interrupts by sending SIGINT to the kernel's whole process group, which
        // includes this JVM: without a handler the JVM would exit. With it, SIGINT stops the cell.
        onSigint(this::stopCell);
        InputStream stdin = new java.io.BufferedInputStream(new FileInputStream(FileDescriptor.in), 1 << 16);
        Thread flusher = new Thread(output::flusherLoop, "carbon-output");
        flusher.setDaemon(true);
        flusher.start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> output.drain(2000)));
        PrintStream out = new PrintStream(new UserStream(output, "OUT"), true, StandardCharsets.UTF_8);
        PrintStream err = new PrintStream(new UserStream(output, "ERR"), true, StandardCharsets.UTF_8);
        InputStream in = new UserInput();
        System.setOut(out);
        System.setErr(err);
        System.setIn(in);

        String engine = args.length > 0 ? args[0] : "local";
        ExecutionControlProvider base =
                engine.equals("jdi")
                        ? new JdiExecutionControlProvider()
                        : new LocalExecutionControlProvider();
        JShell.Builder b =
                JShell.builder()
                        .out(out)
                        .err(err)
                        .in(in)
                        .executionEngine(new PhasedProvider(base), base.defaultParameters());
        if (args.length > 1) {
            // options of the execution JVM (jdi engine only; the local engine runs in this JVM)
            b.remoteVMOptions(java.util.Arrays.copyOfRange(args, 1, args.length));
        }
        shell = b.build();
        shell.onShutdown(s -> shellClosed = true);
        sca = shell.sourceCodeAnalysis();
        for (String imp : DEFAULT_IMPORTS) {
            startup(shell.eval("import " + imp + ";"));
        }
        if (engine.equals("local")) {
            // display(mime, data) and clearOutput() for cells: snippets cannot name this class
            // (it is in the unnamed package), so they reach it through a system property object
            System.getProperties().put(DISPLAY_KEY, (java.util.function.BiConsumer<String, Object>) this::display);
            for (String def : DISPLAY_API) {
                startup(shell.eval(def));
            }
        }

        Thread reader = new Thread(() -> readLoop(stdin), "carbon-stdin");
        reader.setDaemon(true);
        reader.start();
        wire.send(
                "READY",
                new Json()
                        .obj()
                        .key("version").str(Runtime.version().toString())
                        .key("engine").str(engine)
                        .key("java_home").str(System.getProperty("java.home"))
                        .end()
                        .toString());

        while (true) {
            Frame f = requests.take();
            switch (f.kind()) {
                case "EXEC" -> exec(f.text());
                case "COMPLETE" -> complete(f.text());
                case "ISCOMPLETE" -> isComplete(f.text());
                case "INSPECT" -> inspect(f.text());
                case "COMMANDS" -> wire.send(
                        "REPLY", new Json().obj().key("text").str(commandsHelp()).end().toString());
                case "QUIT" -> {
                    output.drain(2000);
                    Runtime.getRuntime().halt(0);
                }
                default -> wire.send("REPLY", "{}");
            }
            if (shellClosed) {
                // The execution engine is gone (System.exit under the jdi engine): the kernel
                // sees this process end and starts a fresh one for the next cell.
                output.drain(2000);
                Runtime.getRuntime().halt(0);
            }
        }
    }

    void readLoop(InputStream stdin) {
        try {
            while (true) {
                Frame f = readFrame(stdin);
                if (f == null) {
                    break;
                }
                switch (f.kind()) {
                    case "STOP" -> stopCell();
                    case "INPUT", "NOINPUT" -> inputReplies.add(f);
                    default -> requests.add(f);
                }
            }
        } catch (IOException | RuntimeException e) {
            // the kernel spoke nonsense: say so on the real stderr (the kernel logs it), then end
            new PrintStream(new FileOutputStream(FileDescriptor.err), true).println("carbon-jshell: " + e);
        }
        // The kernel is gone (or closed the pipe to shut us down), even if user code still runs.
        output.drain(500);
        Runtime.getRuntime().halt(0);
    }

    /** display(mime, data) from a cell; an empty mime clears the output. */
    void display(String mime, Object data) {
        if (mime == null || mime.isEmpty()) {
            output.post("CLEAR", new byte[0]);
            return;
        }
        String payload =
                new Json()
                        .obj()
                        .key("mime").str(mime)
                        .key("data").str(String.valueOf(data))
                        .end()
                        .toString();
        output.post("DISPLAY", payload.getBytes(StandardCharsets.UTF_8));
    }

    /** Stops the running cell, if any (from the reader thread or the SIGINT handler). */
    void stopCell() {
        JShell sh = shell;
        if (busy && sh != null) {
            stopRequested = true;
            try {
                sh.stop();
            } catch (RuntimeException e) {
                // closed or not running: nothing to stop
            }
        }
    }

    /** Installs `action` as the SIGINT handler through sun.misc.Signal (module jdk.unsupported),
     * by reflection so the helper still works, without the handler, where that API is gone. */
    static void onSigint(Runnable action) {
        try {
            Class<?> signal = Class.forName("sun.misc.Signal");
            Class<?> handler = Class.forName("sun.misc.SignalHandler");
            Object proxy =
                    java.lang.reflect.Proxy.newProxyInstance(
                            handler.getClassLoader(),
                            new Class<?>[] {handler},
                            (p, m, a) -> {
                                if (m.getName().equals("handle")) {
                                    action.run();
                                    return null;
                                }
                                return m.getName().equals("hashCode")
                                        ? (Object) System.identityHashCode(p)
                                        : m.getName().equals("equals") ? (Object) (p == a[0])
                                        : "carbon-sigint";
                            });
            Object sig = signal.getConstructor(String.class).newInstance("INT");
            signal.getMethod("handle", signal, handler).invoke(null, sig, proxy);
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            // no handler: SIGINT keeps the JVM's default meaning
        }
    }

    // ---- EXEC ------------------------------------------------------------------------------

    void exec(String cell) {
        cellNo++;
        inputReplies.clear();
        stopRequested = false;
        lastPhase = null;
        busy = true;
        String value = null;
        Json error = null;
        try {
            phase("compile");
            int offset = 0;
            while (error == null) {
                if (stopRequested) {
                    error = interrupted();
                    break;
                }
                // JShell's line numbers (stack traces) are only right for a snippet that starts
                // with code, so leading blank space stays out of the snippet
                while (offset < cell.length() && Character.isWhitespace(cell.charAt(offset))) {
                    offset++;
                }
                String rest = cell.substring(offset);
                if (isCommand(rest)) {
                    // a jshell tool command (/vars, /imports, ...): one line, answered here
                    int eol = rest.indexOf('\n');
                    String line = eol < 0 ? rest : rest.substring(0, eol);
                    error = command(line.strip());
                    offset += eol < 0 ? rest.length() : eol + 1;
                    continue;
                }
                SourceCodeAnalysis.CompletionInfo ci = sca.analyzeCompletion(rest);
                SourceCodeAnalysis.Completeness c = ci.completeness();
                if (c == SourceCodeAnalysis.Completeness.EMPTY) {
                    break;
                }
                String src;
                int consumed;
                if (ci.source() == null || !c.isComplete()) {
                    // incomplete at the end of the cell (or unparsable): evaluate the rest so the
                    // user gets javac's diagnostic
                    src = rest;
                    consumed = rest.length();
                } else {
                    src = ci.source();
                    consumed = rest.length() - ci.remaining().length();
                    if (consumed <= 0) {
                        src = rest;
                        consumed = rest.length();
                    }
                }
                phase("compile");
                List<SnippetEvent> events = shell.eval(src);
                if (stopRequested) {
                    error = interrupted();
                    break;
                }
                value = null;
                for (SnippetEvent ev : events) {
                    if (ev.causeSnippet() != null) {
                        continue; // an update of an older snippet, not this one
                    }
                    Snippet sn = ev.snippet();
                    locations.put(sn.id(), new Loc(cellNo, lineOf(cell, offset)));
                    switch (ev.status()) {
                        case REJECTED -> error = compileError(cell, offset, consumed, sn);
                        case RECOVERABLE_DEFINED, RECOVERABLE_NOT_DEFINED -> recoverable(sn);
                        default -> {}
                    }
                    if (error != null) {
                        break;
                    }
                    JShellException ex = ev.exception();
                    if (ex != null) {
                        error = exception(ex);
                        break;
                    }
                    if (ev.value() != null && isExpression(sn)) {
                        value = ev.value();
                    }
                }
                if (shellClosed && error == null) {
                    error =
                            new Json()
                                    .obj()
                                    .key("ename").str("RuntimeDied")
                                    .key("evalue")
                                    .str("the JShell execution JVM exited (System.exit?); its state"
                                            + " is lost and a new one starts on the next cell")
                                    .key("traceback").arr()
                                    .end()
                                    .end();
                }
                offset += consumed;
            }
        } catch (RuntimeException e) {
            error = internal(e);
        } finally {
            busy = false;
        }
        if (error != null) {
            value = null;
        }
        output.drain(2000);
        Json done = new Json().obj().key("value");
        if (value == null) {
            done.nul();
        } else {
            done.str(value);
        }
        done.key("error");
        if (error == null) {
            done.nul();
        } else {
            done.raw(error.toString());
        }
        wire.send("DONE", done.end().toString());
    }

    // ---- jshell tool commands -------------------------------------------------------------
    // The JShell API evaluates Java only; the jshell tool's `/` commands are built here from the
    // API's snippet lists, printed in the tool's layout ("|    int x = 1").

    /** The commands answered, with what they show (for /help and %lsmagic). */
    static final String[][] COMMANDS = {
        {"/vars", "list the declared variables and their values"},
        {"/methods", "list the declared methods and their signatures"},
        {"/types", "list the declared types (class, interface, enum, record)"},
        {"/imports", "list the imports"},
        {"/list", "list the snippets typed in this session"},
        {"/help", "list these commands"},
    };

    /** A cell line that is a command: `/` then a letter (Java code never starts so). */
    static String commandsHelp() {
        StringBuilder out = new StringBuilder();
        for (String[] c : COMMANDS) {
            out.append(String.format("|  %-10s %s%n", c[0], c[1]));
        }
        return out.toString();
    }

    static boolean isCommand(String rest) {
        return rest.length() > 1
                && rest.charAt(0) == '/'
                && (Character.isLetter(rest.charAt(1)) || rest.charAt(1) == '?');
    }

    /** Runs one command line; the error of an unknown one, else null. */
    Json command(String line) {
        String name = line.split("\\s+", 2)[0];
        StringBuilder out = new StringBuilder();
        switch (name) {
            case "/vars" -> shell.variables().forEach(v -> {
                String value;
                try {
                    value = shell.varValue(v);
                } catch (IllegalArgumentException | IllegalStateException e) {
                    value = "(not initialized)";
                }
                out.append("|    ").append(v.typeName()).append(' ').append(v.name())
                        .append(" = ").append(value).append('\n');
            });
            case "/methods" -> shell.methods().forEach(m -> {
                String sig = m.signature();
                String ret = sig.substring(sig.lastIndexOf(')') + 1);
                out.append("|    ").append(ret).append(' ').append(m.name())
                        .append('(').append(m.parameterTypes()).append(")\n");
            });
            case "/types" -> shell.types().forEach(t -> out.append("|    ")
                    .append(typeKind(t.subKind())).append(' ').append(t.name()).append('\n'));
            case "/imports" -> shell.imports().forEach(i -> out.append("|    ")
                    .append(i.source().strip().replaceAll(";$", "")).append('\n'));
            case "/list" -> shell.snippets()
                    .filter(sn -> shell.status(sn).isActive() && !startupIds.contains(sn.id()))
                    .forEach(sn -> out.append(String.format("%4s : ", sn.id()))
                            .append(sn.source().strip().replace("\n", "\n       "))
                            .append('\n'));
            case "/help", "/?" -> out.append(commandsHelp());
            default -> {
                String msg = "Invalid command: " + name + " (carbon-kernel answers "
                        + String.join(", ", java.util.Arrays.stream(COMMANDS).map(c -> c[0]).toList())
                        + ")";
                return new Json()
                        .obj()
                        .key("ename").str("InvalidCommand")
                        .key("evalue").str(msg)
                        .key("traceback").arr().str("|  " + msg).end()
                        .end();
            }
        }
        System.out.print(out);
        System.out.flush();
        return null;
    }

    static String typeKind(Snippet.SubKind k) {
        return switch (k) {
            case INTERFACE_SUBKIND -> "interface";
            case ENUM_SUBKIND -> "enum";
            case ANNOTATION_TYPE_SUBKIND -> "@interface";
            default -> k.name().startsWith("RECORD") ? "record" : "class";
        };
    }

    static boolean isExpression(Snippet sn) {
        return sn.subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND
                || sn.subKind() == Snippet.SubKind.VAR_VALUE_SUBKIND;
    }

    /** 1-based line of `pos` in `text`. */
    static int lineOf(String text, int pos) {
        int line = 1;
        for (int i = 0; i < pos && i < text.length(); i++) {
            if (text.charAt(i) == '\n') {
                line++;
            }
        }
        return line;
    }

    Json interrupted() {
        return new Json()
                .obj()
                .key("ename").str("Interrupted")
                .key("evalue").str("the cell was stopped; what earlier statements defined is kept")
                .key("traceback").arr().str("Interrupted: the cell was stopped (JShell.stop())").end()
                .end();
    }

    Json internal(RuntimeException e) {
        return new Json()
                .obj()
                .key("ename").str("JShellError")
                .key("evalue").str(String.valueOf(e))
                .key("traceback").arr().str("JShellError: " + e).end()
                .end();
    }

    void recoverable(Snippet sn) {
        if (!(sn instanceof DeclarationSnippet ds)) {
            return;
        }
        List<String> missing = shell.unresolvedDependencies(ds).toList();
        if (!missing.isEmpty()) {
            System.err.println(
                    "note: " + ds.name() + " is defined but cannot be used until "
                            + String.join(", ", missing) + " is declared");
        }
    }

    /** The diagnostics of a rejected snippet, positioned in the user's cell. */
    Json compileError(String cell, int offset, int consumed, Snippet sn) {
        List<Diag> diags = shell.diagnostics(sn).filter(Diag::isError).toList();
        Json tb = new Json().arr();
        String first = null;
        for (Diag d : diags) {
            long p = d.getStartPosition() >= 0 ? d.getStartPosition() : d.getPosition();
            // JShell may append a ';' past the user's text: clamp to what the user wrote
            int pos = offset + (int) Math.max(0, Math.min(p < 0 ? 0 : p, Math.max(0, consumed - 1)));
            pos = Math.min(pos, Math.max(0, cell.length() - 1));
            int line = lineOf(cell, pos);
            int lineStart = cell.lastIndexOf('\n', pos - 1) + 1;
            if (pos == 0) {
                lineStart = 0;
            }
            int col = pos - lineStart + 1;
            int lineEnd = cell.indexOf('\n', lineStart);
            String srcLine = cell.substring(lineStart, lineEnd < 0 ? cell.length() : lineEnd);
            String msg = d.getMessage(Locale.ROOT);
            String head = "line " + line + ", column " + col + ": " + firstLine(msg);
            if (first == null) {
                first = head;
            }
            tb.str("\u001b[0;31m" + head + "\u001b[0m");
            String[] more = msg.split("\n");
            for (int i = 1; i < more.length; i++) {
                tb.str(more[i]);
            }
            tb.str("    " + srcLine);
            tb.str("    " + " ".repeat(Math.max(0, col - 1)) + "^");
        }
        if (first == null) {
            first = "snippet rejected by JShell: " + firstLine(sn.source().strip());
            tb.str(first);
        }
        return new Json()
                .obj()
                .key("ename").str("CompilationError")
                .key("evalue").str(first)
                .key("traceback").raw(tb.end().toString())
                .end();
    }

    static String firstLine(String s) {
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    /** An exception of user code, with its stack trace in terms of the cells. */
    Json exception(JShellException ex) {
        String ename;
        String evalue;
        Json tb = new Json().arr();
        if (ex instanceof UnresolvedReferenceException ure) {
            DeclarationSnippet ds = ure.getSnippet();
            List<String> missing = shell.unresolvedDependencies(ds).toList();
            ename = "UnresolvedReference";
            evalue = ds.name() + " cannot be used until " + String.join(", ", missing)
                    + " is declared";
            tb.str("\u001b[0;31m" + ename + "\u001b[0m: " + evalue);
        } else {
            EvalException ee = (EvalException) ex;
            ename = ee.getExceptionClassName();
            evalue = ee.getMessage() == null ? "" : ee.getMessage();
            Throwable t = ee;
            String prefix = "";
            Set<Throwable> seen = new LinkedHashSet<>();
            while (t != null && seen.add(t)) {
                String cls = t instanceof EvalException e2 ? e2.getExceptionClassName()
                        : t.getClass().getName();
                String m = t.getMessage();
                tb.str(prefix + "\u001b[0;31m" + cls + "\u001b[0m" + (m == null ? "" : ": " + m));
                for (String fr : frames(t.getStackTrace())) {
                    tb.str(fr);
                }
                t = t.getCause();
                prefix = "Caused by: ";
            }
        }
        return new Json()
                .obj()
                .key("ename").str(ename)
                .key("evalue").str(evalue)
                .key("traceback").raw(tb.end().toString())
                .end();
    }

    /** Frames in terms of the user's cells. JShell already cut its own machinery off and
     * names snippet frames with the file `#<snippet id>`, the wrapper class as "" and top-level
     * code's method as "". */
    List<String> frames(StackTraceElement[] st) {
        List<String> out = new ArrayList<>();
        for (StackTraceElement e : st) {
            String file = e.getFileName();
            if (file == null || !file.startsWith("#")) {
                out.add("    at " + e);
                continue;
            }
            String cls = e.getClassName();
            String m = e.getMethodName();
            String name = m.isEmpty() ? "<cell>" : (cls.isEmpty() ? m : cls + "." + m);
            out.add("    at " + name + " (" + where(e) + ")");
        }
        return out;
    }

    String where(StackTraceElement e) {
        String file = e.getFileName();
        int line = e.getLineNumber();
        if (file == null || !file.startsWith("#")) {
            return file == null ? "unknown" : file + ":" + line;
        }
        Loc loc = locations.get(file.substring(1));
        if (loc == null || line < 1) {
            return "snippet " + file + (line >= 1 ? ":" + line : "");
        }
        int l = loc.firstLine() + line - 1;
        return loc.cell() == cellNo ? "line " + l : "line " + l + " of an earlier cell";
    }

    // ---- completion, completeness, documentation --------------------------------------------

    /** Start of the snippet of `code` that contains `cursor`. */
    int snippetStart(String code, int cursor) {
        int offset = 0;
        while (offset < cursor) {
            SourceCodeAnalysis.CompletionInfo ci = sca.analyzeCompletion(code.substring(offset));
            if (ci.completeness() == SourceCodeAnalysis.Completeness.EMPTY
                    || !ci.completeness().isComplete()) {
                break;
            }
            int consumed = code.length() - offset - ci.remaining().length();
            if (consumed <= 0 || offset + consumed >= cursor) {
                break;
            }
            offset += consumed;
        }
        return offset;
    }

    void complete(String payload) {
        int nl = payload.indexOf('\n');
        String code = payload.substring(nl + 1);
        int cursor = Math.max(0, Math.min(Integer.parseInt(payload.substring(0, nl)), code.length()));
        Json r = new Json().obj();
        try {
            int start = snippetStart(code, cursor);
            int[] anchor = new int[1];
            List<SourceCodeAnalysis.Suggestion> sugg =
                    sca.completionSuggestions(code.substring(start, cursor), cursor - start, anchor);
            Set<String> matches = new LinkedHashSet<>();
            for (SourceCodeAnalysis.Suggestion s : sugg) {
                if (s.matchesType()) {
                    matches.add(s.continuation());
                }
            }
            for (SourceCodeAnalysis.Suggestion s : sugg) {
                matches.add(s.continuation());
            }
            Json arr = new Json().arr();
            for (String m : matches) {
                arr.str(m);
            }
            r.key("matches").raw(arr.end().toString())
                    .key("start").num(start + anchor[0])
                    .key("end").num(cursor);
        } catch (RuntimeException e) {
            r.key("matches").arr().end().key("start").num(cursor).key("end").num(cursor);
        }
        wire.send("REPLY", r.end().toString());
    }

    void isComplete(String code) {
        String status = "complete";
        String rest = code;
        try {
            while (true) {
                String lead = rest.stripLeading();
                if (isCommand(lead)) {
                    // a /command line is complete by itself; judge what follows it
                    int eol = lead.indexOf('\n');
                    if (eol < 0) {
                        break;
                    }
                    rest = lead.substring(eol + 1);
                    continue;
                }
                SourceCodeAnalysis.CompletionInfo ci = sca.analyzeCompletion(rest);
                switch (ci.completeness()) {
                    case EMPTY -> {}
                    case COMPLETE, COMPLETE_WITH_SEMI -> {
                        if (!ci.remaining().isBlank() && ci.remaining().length() < rest.length()) {
                            rest = ci.remaining();
                            continue;
                        }
                    }
                    case DEFINITELY_INCOMPLETE, CONSIDERED_INCOMPLETE -> status = "incomplete";
                    default -> status = "invalid";
                }
                break;
            }
        } catch (RuntimeException e) {
            status = "unknown";
        }
        wire.send("REPLY", new Json().obj().key("status").str(status).end().toString());
    }

    void inspect(String payload) {
        int nl = payload.indexOf('\n');
        int nl2 = payload.indexOf('\n', nl + 1);
        int cursor = Integer.parseInt(payload.substring(0, nl));
        String code = payload.substring(nl2 + 1);
        cursor = Math.max(0, Math.min(cursor, code.length()));
        // extend to the end of the identifier under the cursor: JShell documents the element
        // just before its cursor
        while (cursor < code.length() && Character.isJavaIdentifierPart(code.charAt(cursor))) {
            cursor++;
        }
        StringBuilder text = new StringBuilder();
        try {
            int start = snippetStart(code, cursor);
            String input = code.substring(start, cursor);
            List<SourceCodeAnalysis.Documentation> docs = sca.documentation(input, input.length(), true);
            if (docs.isEmpty()) {
                // a method name: JShell documents it from inside its argument list
                docs = sca.documentation(input + "(", input.length() + 1, true);
            }
            for (SourceCodeAnalysis.Documentation d : docs) {
                if (text.length() > 0) {
                    text.append("\n\n");
                }
                text.append(d.signature());
                if (d.javadoc() != null && !d.javadoc().isBlank()) {
                    text.append("\n").append(d.javadoc().strip());
                }
            }
        } catch (RuntimeException e) {
            // nothing to show
        }
        wire.send(
                "REPLY",
                new Json()
                        .obj()
                        .key("found").bool(text.length() > 0)
                        .key("text").str(text.toString())
                        .end()
                        .toString());
    }

    // ---- a minimal JSON writer (the JDK has none) ------------------------------------------

    static final class Json {
        private final StringBuilder sb = new StringBuilder();
        private final ArrayList<Boolean> first = new ArrayList<>();
        private final ArrayList<Character> closers = new ArrayList<>();
        private boolean afterKey;

        private void sep() {
            if (afterKey) {
                afterKey = false;
                return;
            }
            int n = first.size();
            if (n > 0) {
                if (!first.get(n - 1)) {
                    sb.append(',');
                }
                first.set(n - 1, false);
            }
        }

        Json obj() {
            sep();
            sb.append('{');
            first.add(true);
            closers.add('}');
            return this;
        }

        Json arr() {
            sep();
            sb.append('[');
            first.add(true);
            closers.add(']');
            return this;
        }

        /** Closes the innermost object or array. */
        Json end() {
            first.remove(first.size() - 1);
            sb.append(closers.remove(closers.size() - 1));
            return this;
        }

        Json key(String k) {
            sep();
            quote(k);
            sb.append(':');
            afterKey = true;
            return this;
        }

        Json str(String s) {
            sep();
            quote(s);
            return this;
        }

        Json num(long v) {
            sep();
            sb.append(v);
            return this;
        }

        Json bool(boolean v) {
            sep();
            sb.append(v);
            return this;
        }

        Json nul() {
            sep();
            sb.append("null");
            return this;
        }

        Json raw(String json) {
            sep();
            sb.append(json);
            return this;
        }

        private void quote(String s) {
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }

        @Override
        public String toString() {
            return sb.toString();
        }
    }
}
