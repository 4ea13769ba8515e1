// unirun-python: parse unirun's own options, pick a runtime, hand CPython's command line to it.
#include "options.hpp"
#include "runtimes.hpp"
#include "runtime/embed/handoff.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#ifndef UNIRUN_VERSION
#error "UNIRUN_VERSION must be defined by the build"
#endif

namespace fs = std::filesystem;
using namespace unirun::launcher;

namespace {

constexpr int kUsageExit = 2;

int fail(const std::string &message, const std::string &hint = "") {
    std::cerr << "unirun-python: error: " << message << "\n";
    if (!hint.empty()) std::cerr << "  hint: " << hint << "\n";
    return kUsageExit;
}

std::optional<std::string> getenv_string(const std::string &name) {
    const char *value = std::getenv(name.c_str());
    if (!value) return std::nullopt;
    return std::string(value);
}

std::string self_path() {
    std::error_code error;
    auto path = fs::read_symlink("/proc/self/exe", error);
    return error ? std::string() : path.string();
}

std::string canonical_or_empty(const fs::path &path) {
    std::error_code error;
    auto resolved = fs::canonical(path, error);
    return error ? std::string() : resolved.string();
}

// The active virtual environment (VIRTUAL_ENV) and the registered runtime it was made from.
struct VirtualEnv {
    std::string root;
    std::string python;       // its interpreter: getpath finds pyvenv.cfg from here
    std::string home;         // pyvenv.cfg's home
    std::optional<std::string> runtime_tag;
};

std::optional<VirtualEnv> active_virtual_env(const std::vector<Runtime> &runtimes) {
    auto root = getenv_string("VIRTUAL_ENV");
    if (!root || root->empty()) return std::nullopt;
    std::ifstream config(fs::path(*root) / "pyvenv.cfg");
    if (!config) return std::nullopt;
    VirtualEnv venv{*root, "", "", std::nullopt};
    std::string line;
    while (std::getline(config, line)) {
        auto eq = line.find('=');
        if (eq == std::string::npos) continue;
        auto key = line.substr(0, line.find_last_not_of(" \t", eq - 1) + 1);
        auto value = line.substr(line.find_first_not_of(" \t", eq + 1));
        if (key == "home") venv.home = value;
    }
    for (const char *name : {"bin/python3", "bin/python"}) {
        if (fs::exists(fs::path(*root) / name)) {
            venv.python = (fs::path(*root) / name).string();
            break;
        }
    }
    std::string home = canonical_or_empty(venv.home);
    for (const auto &runtime : runtimes) {
        if (!home.empty() && canonical_or_empty(fs::path(runtime.python).parent_path()) == home)
            venv.runtime_tag = runtime.tag;
    }
    return venv;
}

std::optional<std::string> read_file(const std::string &path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    SplitArguments split = split_arguments(args);

    auto parsed = parse_options(split.unirun);
    if (auto *error = std::get_if<UsageError>(&parsed)) {
        std::cerr << "unirun-python: error: " << error->message << "\n"
                  << usage_line() << "\n"
                  << "Try 'unirun-python --unirun-help' for unirun's options and "
                     "'unirun-python --help' for python's.\n";
        return kUsageExit;
    }
    const Options &options = std::get<Options>(parsed);
    if (options.help) {
        std::cout << help_text();
        return 0;
    }
    if (options.version) {
        std::cout << "unirun " << UNIRUN_VERSION << "\n";
        return 0;
    }

    std::string launcher = self_path();
    if (launcher.empty()) return fail("cannot find unirun-python's own path in /proc/self/exe");
    std::string manifest_path = getenv_string("UNIRUN_MANIFEST").value_or(
        (fs::path(launcher).parent_path() / "runtimes.json").string());
    auto manifest_text = read_file(manifest_path);
    if (!manifest_text)
        return fail("cannot read the runtime manifest " + manifest_path,
                    "build unirun with make build (after scripts/bootstrap)");
    auto manifest_or_error =
        parse_manifest(*manifest_text, fs::path(manifest_path).parent_path().string());
    if (auto *error = std::get_if<ManifestError>(&manifest_or_error))
        return fail(error->message + " in " + manifest_path, "rebuild with make build");
    const Manifest &manifest = std::get<Manifest>(manifest_or_error);

    auto request_or_error = make_request(options, getenv_string);
    if (auto *error = std::get_if<UsageError>(&request_or_error)) return fail(error->message);
    const Request &request = std::get<Request>(request_or_error);

    auto venv = active_virtual_env(manifest.runtimes);
    auto selection_or_error =
        select_runtime(manifest.runtimes, request, venv ? venv->runtime_tag : std::nullopt);

    if (options.list_runtimes) {
        if (options.json) {
            std::cout << runtimes_json(manifest.runtimes);
        } else {
            auto *selection = std::get_if<Selection>(&selection_or_error);
            std::cout << runtimes_table(manifest.runtimes, selection ? selection->runtime : nullptr);
        }
        return 0;
    }
    if (auto *error = std::get_if<SelectionError>(&selection_or_error))
        return fail(error->message, error->hint);
    const Selection &selection = std::get<Selection>(selection_or_error);
    const Runtime &runtime = *selection.runtime;

    std::string python_executable = runtime.python;
    if (venv) {
        if (venv->runtime_tag == runtime.tag && !venv->python.empty())
            python_executable = venv->python;
        else
            std::cerr << "unirun-python: note: the active virtual environment " << venv->root
                      << " was not made from runtime " << runtime.tag
                      << ", so its packages are not importable; make it with that runtime's "
                         "python, or register its interpreter (docs/runtimes.md)\n";
    }

    // Children started through sys.executable (subprocess, multiprocessing) come back here;
    // this makes them pick the same runtime unless their own command line says otherwise.
    setenv("UNIRUN_RUNTIME", runtime.tag.c_str(), 1);
    // ... and with the same compat settings.
    setenv("UNIRUN_COMPAT", request.compat.c_str(), 1);
    setenv("UNIRUN_PROCESS_POOL", request.process_pool.c_str(), 1);

    // --trace: the program (unirun.RuntimeConfig) and children append to the same file.
    if (options.trace) {
        std::error_code error;
        auto path = fs::absolute(*options.trace, error);
        setenv("UNIRUN_TRACE", (error ? *options.trace : path.string()).c_str(), 1);
    }
    if (auto trace_path = getenv_string("UNIRUN_TRACE"); trace_path && !trace_path->empty()) {
        std::ofstream out(*trace_path, std::ios::app);
        if (!out)
            return fail("cannot write the trace file " + *trace_path,
                        "give --trace (or UNIRUN_TRACE) a path in a writable directory");
        out << selection_json(selection, request) << "\n";
    }

    // RTLD_GLOBAL: extension modules resolve the C API from the libpython this library loads.
    void *library = dlopen(runtime.library.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!library)
        return fail("cannot load the runtime library for " + runtime.tag + ": " + dlerror(),
                    "rebuild with make build");
    auto runtime_main =
        reinterpret_cast<unirun_runtime_main_fn>(dlsym(library, UNIRUN_RUNTIME_MAIN_SYMBOL));
    if (!runtime_main)
        return fail(runtime.library + " has no " UNIRUN_RUNTIME_MAIN_SYMBOL,
                    "rebuild with make build");

    std::vector<char *> python_argv;
    python_argv.push_back(argv[0]);
    for (auto &arg : split.python) python_argv.push_back(arg.data());
    python_argv.push_back(nullptr);

    unirun_handoff handoff{};
    handoff.version = UNIRUN_HANDOFF_VERSION;
    handoff.argc = static_cast<int>(python_argv.size() - 1);
    handoff.argv = python_argv.data();
    handoff.launcher = launcher.c_str();
    handoff.python_executable = python_executable.c_str();
    handoff.runtime_tag = runtime.tag.c_str();
    handoff.shims_dir = manifest.shims_dir.c_str();
    handoff.decision = selection.reason.c_str();
    handoff.compat = request.compat.c_str();
    handoff.process_pool = request.process_pool.c_str();
    return runtime_main(&handoff);
}
