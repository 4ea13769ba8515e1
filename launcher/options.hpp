// unirun-python's own command line: the options that come before CPython's arguments,
// and their environment twins. Pure functions, unit-tested in tests/cpp.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace unirun::launcher {

enum class ThreadMode { Auto, Gil, NoGil };

std::optional<ThreadMode> parse_thread_mode(std::string_view text);
std::string_view to_string(ThreadMode mode);

// The arguments after argv[0], split where unirun's options end and CPython's begin.
struct SplitArguments {
    std::vector<std::string> unirun;  // leading options that belong to unirun-python
    std::vector<std::string> python;  // everything else, handed to CPython unchanged
};

// unirun's options are long options at the front of the command line. The first argument that
// is not one (a script, `-c`, `-`, any short option, or one of CPython's own long options such
// as --version) ends them; a lone `--` ends them too and is kept for python, which reads it as
// "the script comes next" (`unirun-python -- --weird.py` runs --weird.py, as python does).
SplitArguments split_arguments(const std::vector<std::string> &args);

struct Options {
    std::optional<ThreadMode> thread_mode;
    std::optional<std::string> runtime;
    std::optional<std::string> trace;  // JSON Lines of every decision go there (env UNIRUN_TRACE)
    std::optional<std::string> compat;        // managed | off (env UNIRUN_COMPAT)
    std::optional<std::string> process_pool;  // processes | interpreters (env UNIRUN_PROCESS_POOL)
    std::optional<std::string> metrics;           // PATH or off (env UNIRUN_METRICS)
    std::optional<std::string> metrics_interval;  // SECONDS (env UNIRUN_METRICS_INTERVAL)
    std::optional<std::string> timeline;          // PATH (env UNIRUN_TIMELINE)
    std::optional<std::string> canary;            // CONTROL:CANDIDATE (unirun._canary)
    std::optional<std::string> canary_runs;       // N: candidate runs
    std::optional<std::string> canary_report;     // PATH: the JSON report
    std::optional<std::string> venv_python;       // runtime | launcher (env UNIRUN_VENV_PYTHON)
    bool list_runtimes = false;
    bool json = false;
    bool version = false;
    bool help = false;
};

struct UsageError {
    std::string message;
};

std::variant<Options, UsageError> parse_options(const std::vector<std::string> &unirun_args);

std::string usage_line();
std::string help_text();

// Where a setting came from: the command line beats the environment, which beats the default.
enum class Source { Default, Environment, CommandLine };

using EnvLookup = std::function<std::optional<std::string>(const std::string &)>;

// What the user asked for, after merging options with their environment twins.
struct Request {
    ThreadMode thread_mode = ThreadMode::Auto;
    Source thread_mode_source = Source::Default;
    std::optional<std::string> runtime;
    Source runtime_source = Source::Default;
    bool python_gil_off = false;  // PYTHON_GIL=0: the user asks a free-threaded build to stay so
    std::string compat = "managed";
    std::string process_pool = "processes";
    std::string metrics;           // a path (.prom: Prometheus text, else JSON), "off", or empty
    std::string metrics_interval;  // seconds, a positive number; empty: only at exit
    std::string timeline;          // a path, or empty
    std::string venv_python;       // runtime | launcher: what -m venv makes bin/python; empty: runtime
};

std::variant<Request, UsageError> make_request(const Options &options, const EnvLookup &env);

}  // namespace unirun::launcher
