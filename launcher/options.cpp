#include "options.hpp"

#include <CLI/CLI.hpp>

#include <array>
#include <cctype>
#include <cstdlib>
#include <tuple>
#include <sstream>

namespace unirun::launcher {

namespace {

// CPython's own long options (Python/initconfig.c): they belong to python, not to unirun.
constexpr std::array<std::string_view, 6> kPythonLongOptions = {
    "--help", "--version", "--check-hash-based-pycs", "--help-env", "--help-xoptions", "--help-all"};

bool is_python_long_option(std::string_view arg) {
    for (auto option : kPythonLongOptions) {
        if (arg == option) return true;
        // --check-hash-based-pycs takes a value, possibly attached with '='
        if (arg.size() > option.size() && arg.substr(0, option.size()) == option &&
            arg[option.size()] == '=')
            return true;
    }
    return false;
}

bool process_pool_mode(const std::string &text) {
    return text == "processes" || text == "interpreters" || text == "stdlib" || text == "dask" ||
           (text.rfind("dask:", 0) == 0 && text.size() > 5);
}

// Options of ours that take a value as the next argument when not written with '='.
bool takes_separate_value(std::string_view arg) {
    return arg == "--thread-mode" || arg == "--runtime" || arg == "--trace" || arg == "--compat" ||
           arg == "--process-pool" || arg == "--metrics" || arg == "--metrics-interval" ||
           arg == "--timeline" || arg == "--canary" || arg == "--canary-runs" || arg == "--canary-report" ||
           arg == "--venv-python";
}

struct OptionTexts {
    std::string thread_mode, runtime, trace, compat, process_pool, metrics, metrics_interval, timeline, canary,
        canary_runs, canary_report, venv_python;
};

void build_app(CLI::App &app, Options &options, OptionTexts &texts) {
    app.set_help_flag();  // -h/--help belong to CPython; ours is --unirun-help
    app.allow_extras(false);
    app.add_option("--thread-mode", texts.thread_mode,
                   "auto|gil|nogil: pick a GIL or a free-threaded runtime (env UNIRUN_THREAD_MODE)");
    app.add_option("--runtime", texts.runtime,
                   "run on the registered runtime TAG, e.g. cp313t (env UNIRUN_RUNTIME)");
    app.add_option("--compat", texts.compat,
                   "managed|off: serve concurrent.futures executors from unirun (default managed), or "
                   "leave the standard library alone (env UNIRUN_COMPAT)");
    app.add_option("--process-pool", texts.process_pool,
                   "processes|interpreters|stdlib|dask[:ADDRESS]: what serves ProcessPoolExecutor under "
                   "compat (default processes: unirun's process workers; dask: a Dask cluster; env "
                   "UNIRUN_PROCESS_POOL)");
    app.add_option("--trace", texts.trace,
                   "append every decision (runtime, scopes, executors) to PATH as JSON Lines "
                   "(env UNIRUN_TRACE)");
    app.add_option("--metrics", texts.metrics,
                   "write every executor's metrics to PATH at exit: Prometheus text for *.prom, "
                   "JSON otherwise; off stops collecting them (env UNIRUN_METRICS)");
    app.add_option("--metrics-interval", texts.metrics_interval,
                   "with --metrics: also rewrite PATH every SECONDS while running "
                   "(env UNIRUN_METRICS_INTERVAL)");
    app.add_option("--timeline", texts.timeline,
                   "record every task as a span on its worker and write them to PATH at exit, in "
                   "Chrome's Trace Event format (Perfetto, chrome://tracing; env UNIRUN_TIMELINE)");
    app.add_option("--canary", texts.canary,
                   "CONTROL:CANDIDATE: run the program under two configurations (gil, nogil, "
                   "compat-off, managed, processes, interpreters, stdlib, joined by +) and report "
                   "what differs (docs/canary.md)");
    app.add_option("--canary-runs", texts.canary_runs, "with --canary: run the candidate N times (default 1)");
    app.add_option("--canary-report", texts.canary_report, "with --canary: write the full report to PATH as JSON");
    app.add_option("--venv-python", texts.venv_python,
                   "runtime|launcher: in a venv made with -m venv, bin/python is the runtime's python "
                   "(default) or this launcher; bin/unirun-python is the launcher either way "
                   "(env UNIRUN_VENV_PYTHON)");
    app.add_flag("--list-runtimes", options.list_runtimes, "list the registered runtimes and exit");
    app.add_flag("--json", options.json, "with --list-runtimes: print JSON instead of a table");
    app.add_flag("--unirun-version", options.version, "print unirun's version and exit");
    app.add_flag("--unirun-help", options.help, "print this help and exit");
}

}  // namespace

std::optional<ThreadMode> parse_thread_mode(std::string_view text) {
    if (text == "auto") return ThreadMode::Auto;
    if (text == "gil") return ThreadMode::Gil;
    if (text == "nogil") return ThreadMode::NoGil;
    return std::nullopt;
}

std::string_view to_string(ThreadMode mode) {
    switch (mode) {
        case ThreadMode::Gil: return "gil";
        case ThreadMode::NoGil: return "nogil";
        case ThreadMode::Auto: break;
    }
    return "auto";
}

SplitArguments split_arguments(const std::vector<std::string> &args) {
    SplitArguments split;
    size_t i = 0;
    for (; i < args.size(); ++i) {
        const std::string &arg = args[i];
        // `--` ends unirun's options and stays on python's command line, where it means what it
        // means to python: the next argument is the script even if it starts with '-'.
        if (arg == "--") break;
        if (arg.rfind("--", 0) != 0 || is_python_long_option(arg)) break;
        split.unirun.push_back(arg);
        if (takes_separate_value(arg) && i + 1 < args.size()) split.unirun.push_back(args[++i]);
    }
    split.python.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
    return split;
}

std::variant<Options, UsageError> parse_options(const std::vector<std::string> &unirun_args) {
    Options options;
    OptionTexts texts;
    CLI::App app{"unirun-python"};
    build_app(app, options, texts);
    std::string &thread_mode_text = texts.thread_mode, &runtime_text = texts.runtime,
                &trace_text = texts.trace;
    // CLI11 parses a reversed vector (it pops arguments from the back).
    std::vector<std::string> reversed(unirun_args.rbegin(), unirun_args.rend());
    try {
        app.parse(reversed);
    } catch (const CLI::ParseError &error) {
        return UsageError{error.what()};
    }
    if (app.count("--thread-mode")) {
        auto mode = parse_thread_mode(thread_mode_text);
        if (!mode)
            return UsageError{"--thread-mode=" + thread_mode_text +
                              " is not a thread mode; use auto, gil or nogil"};
        options.thread_mode = mode;
    }
    if (app.count("--runtime")) {
        if (runtime_text.empty()) return UsageError{"--runtime needs a tag; see --list-runtimes"};
        options.runtime = runtime_text;
    }
    if (app.count("--trace")) {
        if (trace_text.empty()) return UsageError{"--trace needs a file path"};
        options.trace = trace_text;
    }
    if (app.count("--compat")) {
        if (texts.compat != "managed" && texts.compat != "off")
            return UsageError{"--compat=" + texts.compat + " is not a compat mode; use managed or off"};
        options.compat = texts.compat;
    }
    if (app.count("--process-pool")) {
        if (!process_pool_mode(texts.process_pool))
            return UsageError{"--process-pool=" + texts.process_pool +
                              " is not a process pool mode; use processes, interpreters, stdlib, dask or "
                              "dask:ADDRESS"};
        options.process_pool = texts.process_pool;
    }
    if (app.count("--venv-python")) {
        if (texts.venv_python != "runtime" && texts.venv_python != "launcher")
            return UsageError{"--venv-python=" + texts.venv_python +
                              " is not a choice; use runtime (bin/python is the runtime's python) or "
                              "launcher (bin/python is unirun-python)"};
        options.venv_python = texts.venv_python;
    }
    for (auto [flag, text, slot] : {std::tuple{"--metrics", &texts.metrics, &options.metrics},
                                     std::tuple{"--metrics-interval", &texts.metrics_interval,
                                                &options.metrics_interval},
                                     std::tuple{"--timeline", &texts.timeline, &options.timeline},
                                     std::tuple{"--canary", &texts.canary, &options.canary},
                                     std::tuple{"--canary-runs", &texts.canary_runs, &options.canary_runs},
                                     std::tuple{"--canary-report", &texts.canary_report, &options.canary_report}}) {
        if (!app.count(flag)) continue;
        if (text->empty())
            return UsageError{std::string(flag) + (std::string_view(flag) == "--metrics-interval" ||
                                                           std::string_view(flag) == "--canary-runs"
                                                       ? " needs a number"
                                                       : std::string_view(flag) == "--canary"
                                                             ? " needs CONTROL:CANDIDATE, e.g. --canary=gil:nogil"
                                                             : " needs a file path")};
        *slot = *text;
    }
    if ((options.canary_runs || options.canary_report) && !options.canary)
        return UsageError{std::string(options.canary_runs ? "--canary-runs" : "--canary-report") +
                          " goes with --canary=CONTROL:CANDIDATE"};
    if (options.canary_runs) {
        const std::string &runs = *options.canary_runs;
        if (runs.empty() || runs.size() > 6 || runs.find_first_not_of("0123456789") != std::string::npos ||
            std::stoi(runs) < 1)
            return UsageError{"--canary-runs=" + runs + " is not a number of runs; give 1 or more"};
    }
    if (options.json && !options.list_runtimes)
        return UsageError{"--json only goes with --list-runtimes"};
    return options;
}

std::string usage_line() {
    return "usage: unirun-python [--thread-mode=auto|gil|nogil] [--runtime=TAG] "
           "[--compat=managed|off] [--process-pool=processes|interpreters|stdlib|dask[:ADDRESS]] [--trace=PATH] "
           "[--metrics=PATH|off [--metrics-interval=SECONDS]] [--timeline=PATH] "
           "[--canary=CONTROL:CANDIDATE [--canary-runs=N] [--canary-report=PATH]] "
           "[--list-runtimes [--json]] [--unirun-version] [--unirun-help] [python options and "
           "arguments]";
}

std::string help_text() {
    Options options;
    OptionTexts texts;
    CLI::App app{"unirun-python: runs any program exactly as python does, with every "
                 "concurrent.futures executor served by unirun's native scheduler.\n"
                 "unirun's options come first; everything after them is python's command line "
                 "(see unirun-python --help)."};
    build_app(app, options, texts);
    std::ostringstream out;
    out << usage_line() << "\n\n" << app.help("unirun-python");
    out << "\nThread mode auto picks, in order: the runtime of the active virtual environment;\n"
           "a free-threaded runtime when PYTHON_GIL=0; the newest GIL runtime; the newest\n"
           "free-threaded runtime. Command-line options beat their environment twins.\n";
    return out.str();
}

std::variant<Request, UsageError> make_request(const Options &options, const EnvLookup &env) {
    Request request;
    if (options.thread_mode) {
        request.thread_mode = *options.thread_mode;
        request.thread_mode_source = Source::CommandLine;
    } else if (auto text = env("UNIRUN_THREAD_MODE"); text && !text->empty()) {
        auto mode = parse_thread_mode(*text);
        if (!mode)
            return UsageError{"UNIRUN_THREAD_MODE=" + *text +
                              " is not a thread mode; set it to auto, gil or nogil, or unset it"};
        request.thread_mode = *mode;
        request.thread_mode_source = Source::Environment;
    }
    if (options.runtime) {
        request.runtime = options.runtime;
        request.runtime_source = Source::CommandLine;
    } else if (auto tag = env("UNIRUN_RUNTIME"); tag && !tag->empty()) {
        // An environment runtime yields to a thread mode given on the command line: the
        // launcher exports UNIRUN_RUNTIME for its children, and an explicit flag must win.
        if (request.thread_mode_source != Source::CommandLine) {
            request.runtime = tag;
            request.runtime_source = Source::Environment;
        }
    }
    auto gil = env("PYTHON_GIL");
    request.python_gil_off = gil && *gil == "0";
    // A choice from its flag (checked by parse_options), else its environment twin, checked here.
    using Valid = bool (*)(const std::string &);
    for (auto [flag, variable, valid, expected, slot] : {
             std::tuple{&options.compat, "UNIRUN_COMPAT",
                        Valid([](const std::string &t) { return t == "managed" || t == "off"; }),
                        "a compat mode; set it to managed or off", &request.compat},
             std::tuple{&options.process_pool, "UNIRUN_PROCESS_POOL", Valid(process_pool_mode),
                        "a process pool mode; set it to processes, interpreters, stdlib, dask or "
                        "dask:ADDRESS",
                        &request.process_pool},
             std::tuple{&options.venv_python, "UNIRUN_VENV_PYTHON",
                        Valid([](const std::string &t) { return t == "runtime" || t == "launcher"; }),
                        "a choice; set it to runtime or launcher", &request.venv_python}}) {
        if (*flag) {
            *slot = **flag;
        } else if (auto text = env(variable); text && !text->empty()) {
            if (!valid(*text))
                return UsageError{std::string(variable) + "=" + *text + " is not " + expected +
                                  ", or unset it"};
            *slot = *text;
        }
    }
    // The observability settings: each from its flag, else its environment twin.
    auto pick = [&](const std::optional<std::string> &flag, const char *name) -> std::pair<std::string, std::string> {
        if (flag) return {*flag, std::string("--") + name};
        std::string var = "UNIRUN_" + std::string(name);
        for (auto &c : var) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        auto text = env(var);
        return {text ? *text : "", var};
    };
    auto [metrics, metrics_from] = pick(options.metrics, "metrics");
    auto [interval, interval_from] = pick(options.metrics_interval, "metrics-interval");
    auto [timeline, timeline_from] = pick(options.timeline, "timeline");
    if (!interval.empty()) {
        char *end = nullptr;
        double seconds = std::strtod(interval.c_str(), &end);
        if (end == interval.c_str() || *end != '\0' || !(seconds > 0) || seconds > 1e9)
            return UsageError{interval_from + "=" + interval +
                              " is not a number of seconds; give a positive number such as 10 or 0.5"};
        if (metrics.empty() || metrics == "off")
            return UsageError{interval_from + " needs a metrics file: give --metrics=PATH (or UNIRUN_METRICS) too"};
    }
    request.metrics = metrics;
    request.metrics_interval = interval;
    request.timeline = timeline;
    return request;
}

}  // namespace unirun::launcher
