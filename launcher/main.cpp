// unirun-python: parse unirun's own options, pick a runtime, hand CPython's command line to it.
#include "options.hpp"
#include "runtimes.hpp"
#include "runtime/embed/handoff.h"

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <tuple>
#include <variant>

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

bool is_executable_file(const fs::path &path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
}

// The launcher's path as python finds its own (Modules/getpath.py): argv[0] made absolute when
// it has a slash, else looked up in PATH; symlinks are not resolved. Kept only when it leads to
// this very program; otherwise (exec with a made-up argv[0]) the resolved path stands in.
std::string invoked_path(const char *argv0, const std::string &real) {
    std::string name = argv0 ? argv0 : "";
    fs::path candidate;
    if (name.find('/') != std::string::npos) {
        std::error_code error;
        candidate = fs::absolute(name, error).lexically_normal();
    } else if (!name.empty()) {
        std::string path_list = std::getenv("PATH") ? std::getenv("PATH") : "";
        std::istringstream dirs(path_list);
        std::string dir;
        while (std::getline(dirs, dir, ':')) {
            std::error_code error;
            fs::path full = fs::absolute(fs::path(dir.empty() ? "." : dir) / name, error);
            if (!error && is_executable_file(full)) {
                candidate = full.lexically_normal();
                break;
            }
        }
    }
    if (!candidate.empty() && canonical_or_empty(candidate) == canonical_or_empty(real))
        return candidate.string();
    return real;
}

// What python's getpath does first: a `<executable>._pth` beside the program (the path it was
// started by, then the resolved one) replaces sys.path and implies isolated mode without site.
bool has_pth_file(const std::string &invoked, const std::string &real) {
    for (const auto &program : {invoked, real}) {
        std::error_code error;
        if (program.empty() || !fs::is_regular_file(program + "._pth", error)) continue;
        if (std::ifstream(program + "._pth")) return true;  // python skips one it cannot read
    }
    return false;
}

// The first part of `path` this user may not use: a directory it cannot search, or the file
// itself when it lacks `mode`. Empty when nothing is denied (or the path does not exist).
std::string first_denied(const fs::path &path, int mode) {
    fs::path prefix;
    for (auto part = path.begin(); part != path.end(); ++part) {
        prefix /= *part;
        bool last = std::next(part) == path.end();
        if (::access(prefix.c_str(), last ? mode : X_OK) != 0 && errno == EACCES)
            return prefix.string();
    }
    return "";
}

std::string this_user() {
    return "this user (uid " + std::to_string(::getuid()) + ")";
}

// A virtual environment: its pyvenv.cfg read as getpath reads it (a `home` key makes it one).
struct VirtualEnv {
    std::string root;
    std::string home;        // pyvenv.cfg's home: the directory of the python it was made from
    std::string executable;  // pyvenv.cfg's executable: what made it (a launcher, when we did)
    std::optional<std::string> runtime_tag;  // the registered runtime whose python is in home
};

std::optional<VirtualEnv> read_venv(const fs::path &root) {
    std::ifstream config(root / "pyvenv.cfg");
    if (!config) return std::nullopt;
    VirtualEnv venv{root.string(), "", "", std::nullopt};
    bool has_home = false;
    std::string line;
    auto trim = [](const std::string &text) {
        auto first = text.find_first_not_of(" \t\r");
        if (first == std::string::npos) return std::string();
        return text.substr(first, text.find_last_not_of(" \t\r") - first + 1);
    };
    while (std::getline(config, line)) {
        auto eq = line.find('=');
        if (eq == std::string::npos) continue;
        std::string key = trim(line.substr(0, eq));
        std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
        std::string value = trim(line.substr(eq + 1));
        if (key == "home" && !has_home) {  // getpath takes the first
            venv.home = value;
            has_home = true;
        } else if (key == "executable" && venv.executable.empty()) {
            venv.executable = value;
        }
    }
    if (!has_home) return std::nullopt;
    return venv;
}

// The registered runtime whose python is in the venv's home: its directory as registered or
// as resolved (a registered symlink). Where two share the directory (python3.13 and python3.13t
// in one bin/), the one whose library directory the venv has: venv makes lib/python3.13t for a
// free-threaded python, lib/python3.13 for a GIL one.
void match_runtime(VirtualEnv &venv, const std::vector<Runtime> &runtimes) {
    std::string home = canonical_or_empty(venv.home);
    if (home.empty()) return;
    const Runtime *found = nullptr;
    for (const auto &runtime : runtimes) {
        fs::path python(runtime.python);
        bool here = canonical_or_empty(python.parent_path()) == home ||
                    fs::path(canonical_or_empty(python)).parent_path().string() == home;
        if (!here) continue;
        std::string version = runtime.version.substr(0, runtime.version.find('.', runtime.version.find('.') + 1));
        std::error_code error;
        bool named = fs::is_directory(fs::path(venv.root) / "lib" /
                                          ("python" + version + (runtime.free_threaded ? "t" : "")),
                                      error);
        if (!found || named) found = &runtime;
        if (named) break;
    }
    if (found) venv.runtime_tag = found->tag;
}

// The venv a program belongs to by python's rule (Modules/getpath.py): pyvenv.cfg one level above
// the program's directory, else in that directory. The program's path is taken as invoked, so a
// symlink in v/bin/ belongs to v.
std::optional<VirtualEnv> venv_of_program(const std::string &program) {
    fs::path dir = fs::path(program).parent_path();
    if (dir.empty()) return std::nullopt;
    if (auto venv = read_venv(dir.parent_path())) return venv;
    std::error_code error;
    if (fs::exists(dir.parent_path() / "pyvenv.cfg", error)) return std::nullopt;  // no home: none
    return read_venv(dir);
}

// The active virtual environment named by VIRTUAL_ENV (python itself ignores it; the launcher
// honours it when it runs from outside the venv).
std::optional<VirtualEnv> activated_venv() {
    auto root = getenv_string("VIRTUAL_ENV");
    if (!root || root->empty()) return std::nullopt;
    return read_venv(*root);
}

// python's -E and -I (also inside grouped flags like -IS): the environment is ignored, so
// PYTHONHOME and VIRTUAL_ENV are too. Scans python's options up to the script, -c or -m.
bool python_ignores_environment(const std::vector<std::string> &args) {
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string &arg = args[i];
        if (arg.size() < 2 || arg[0] != '-' || arg == "--") return false;
        if (arg[1] == '-') {  // python's long options: one takes a value in the next argument
            if (arg == "--check-hash-based-pycs") ++i;
            continue;
        }
        for (size_t j = 1; j < arg.size(); ++j) {
            char flag = arg[j];
            if (flag == 'E' || flag == 'I') return true;
            if (flag == 'c' || flag == 'm') return false;  // the rest is the program
            if (flag == 'W' || flag == 'X') {               // the rest, or the next, is a value
                if (j + 1 == arg.size()) ++i;
                break;
            }
        }
    }
    return false;
}

struct FileText {
    std::optional<std::string> text;
    int error = 0;  // errno when text is empty
};

FileText read_file(const std::string &path) {
    errno = 0;
    std::ifstream in(path);
    if (!in) return {std::nullopt, errno ? errno : ENOENT};
    std::ostringstream text;
    text << in.rdbuf();
    return {text.str(), 0};
}

// Where the runtime manifest is: UNIRUN_MANIFEST; else runtimes.json beside the launcher
// (symlinks resolved), or where an installed launcher keeps it (install_manifest_path(),
// relative to the launcher's directory); else, for a launcher copied into a virtual environment,
// beside the launcher that made the environment (pyvenv.cfg's executable); else the build
// directory this launcher was built in, while that still exists.
struct ManifestLocation {
    std::string path;
    std::string origin;         // for messages: how this path was chosen
    std::string base_launcher;  // the launcher this manifest belongs to: venvs link to it
};

std::optional<std::string> manifest_of_launcher(const fs::path &launcher) {
    std::error_code error;
    std::vector<fs::path> candidates{launcher.parent_path() / "runtimes.json"};
    if (auto installed = install_manifest_path(); !installed.empty())
        candidates.push_back((launcher.parent_path() / installed).lexically_normal());
    for (const auto &candidate : candidates) {
        if (fs::exists(candidate, error) || (error && error != std::errc::no_such_file_or_directory))
            return candidate.string();
    }
    return std::nullopt;
}

std::variant<ManifestLocation, int> locate_manifest(const std::string &launcher, const std::string &invoked) {
    if (auto named = getenv_string("UNIRUN_MANIFEST"); named && !named->empty())
        return ManifestLocation{*named, "named by UNIRUN_MANIFEST", launcher};
    if (auto found = manifest_of_launcher(launcher))
        return ManifestLocation{*found, "beside the launcher", launcher};
    // A copy in a venv: follow pyvenv.cfg's executable (a few hops: venvs made from venvs).
    std::string program = invoked;
    for (int hop = 0; hop < 4; ++hop) {
        auto venv = venv_of_program(program);
        if (!venv || venv->executable.empty()) break;
        std::string maker = canonical_or_empty(venv->executable);
        if (maker.empty() || maker == canonical_or_empty(program)) break;
        if (auto found = manifest_of_launcher(maker))
            return ManifestLocation{*found, "beside " + maker + ", which made the virtual environment " +
                                                venv->root, maker};
        program = maker;
    }
    std::string built = build_manifest_path();
    std::error_code error;
    if (!built.empty() && fs::exists(built, error))
        return ManifestLocation{built, "of the build directory this launcher was built in", launcher};
    return ENOENT;
}

// The CPython the runtime library brought in, as that libpython reports itself.
struct LoadedPython {
    std::string version_text;  // Py_GetVersion()
    bool free_threaded = false;
    std::string libpython;     // the file it was loaded from
};

std::optional<LoadedPython> loaded_python(void *library) {
    using version_fn = const char *(*)();
    auto get_version = reinterpret_cast<version_fn>(dlsym(library, "Py_GetVersion"));
    if (!get_version) return std::nullopt;
    LoadedPython loaded;
    loaded.version_text = get_version();
    // "3.13.5 experimental free-threading build (main, ...)" on 3.13t, "free-threading build"
    // on 3.14t; _Py_DecRefShared exists only in free-threaded builds (Py_DECREF calls it).
    loaded.free_threaded = loaded.version_text.find("free-threading build") != std::string::npos ||
                           dlsym(library, "_Py_DecRefShared") != nullptr;
    Dl_info info{};
    if (dladdr(reinterpret_cast<void *>(get_version), &info) && info.dli_fname)
        loaded.libpython = info.dli_fname;
    return loaded;
}

// "3.13.5" from "3.13.5+ (main, ...)" or "3.15.0a1 ...": the release numbers only, as the
// manifest records them.
std::string release_of(const std::string &version_text) {
    size_t end = 0;
    auto release_char = [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
    };
    while (end < version_text.size() && release_char(version_text[end])) ++end;
    return version_text.substr(0, end);
}

std::string build_name(bool free_threaded) { return free_threaded ? "free-threaded" : "GIL"; }

struct Failure {
    std::string message;
    std::string hint;
};

// Why the runtime library did not load, with the way out that fits the cause: a missing file,
// or a file this user may not read (rebuilding changes nothing there), or anything else.
Failure load_failure(const Runtime &runtime, const std::string &dl_error,
                     const std::string &manifest_path) {
    std::string message = "cannot load the runtime library for " + runtime.tag + ": " + dl_error;
    std::error_code error;
    if (!fs::exists(runtime.library, error) && !error)
        return {"the runtime library for " + runtime.tag + ", " + runtime.library +
                    ", does not exist",
                "the manifest " + manifest_path + " names it" +
                    " (relative names are beside the manifest); make build writes both, and a "
                    "launcher copied elsewhere needs them beside it or UNIRUN_MANIFEST set"};
    // A permission problem: on the library itself, or on the CPython installation its libpython
    // comes from (the runtime's python stands for that installation). Rebuilding changes nothing.
    std::string denied = first_denied(runtime.library, R_OK);
    bool in_runtime = denied.empty();
    if (in_runtime) denied = first_denied(runtime.python, R_OK);
    if (!denied.empty() || dl_error.find("Permission denied") != std::string::npos) {
        std::string verb = fs::is_directory(denied, error) ? " may not enter " : " may not read ";
        std::string facts =
            denied.empty()
                ? this_user() + " may not read a file the runtime library needs"
                : this_user() + verb + denied +
                      (in_runtime ? ", where the CPython runtime " + runtime.python + " is" : "");
        return {"cannot load the runtime library for " + runtime.tag + ": permission denied: " +
                    facts + " (the loader said: " + dl_error + ")",
                "give " + this_user() + " read and search access to " +
                    (denied.empty() ? std::string("the runtime's files") : denied) +
                    " (e.g. chmod o+rX), or run unirun-python as a user that can read the runtime"};
    }
    return {message, "make build rebuilds the runtime libraries against the registered runtimes"};
}

// The loaded library's CPython against the manifest entry it was chosen by: version and build,
// and the entry's python when its file name says which CPython it is (python3.13, python3.13t).
std::optional<Failure> mismatch(const Runtime &runtime, void *library,
                                const std::string &manifest_path) {
    std::string hint = "the manifest " + manifest_path +
                       " does not describe what was built: correct that entry, or use the "
                       "runtimes.json that make build writes from the runtimes themselves";
    auto loaded = loaded_python(library);
    if (!loaded)
        return Failure{runtime.library + " brought in no libpython (no Py_GetVersion)", hint};
    std::string from = loaded->libpython.empty() ? "" : " (" + loaded->libpython + ")";
    std::string entry = "the manifest entry " + runtime.tag + " says CPython " + runtime.version +
                        ", " + build_name(runtime.free_threaded) + " build";
    if (loaded->free_threaded != runtime.free_threaded)
        return Failure{entry + ", but its library " + runtime.library + " runs a " +
                           build_name(loaded->free_threaded) + " CPython " +
                           release_of(loaded->version_text) + from,
                       hint};
    if (release_of(loaded->version_text) != runtime.version)
        return Failure{entry + ", but its library " + runtime.library + " runs CPython " +
                           release_of(loaded->version_text) + from,
                       hint};
    std::error_code error;
    if (!fs::exists(runtime.python, error) && !error)
        return Failure{entry + ", but its python " + runtime.python + " does not exist", hint};
    std::string name = fs::path(canonical_or_empty(runtime.python)).filename().string();
    auto dot = name.find('.');
    if (name.rfind("python", 0) == 0 && dot != std::string::npos) {
        std::string numbers = name.substr(6);
        bool python_free = !numbers.empty() && numbers.back() == 't';
        if (python_free) numbers.pop_back();
        std::string major_minor = release_of(runtime.version);
        major_minor = major_minor.substr(0, major_minor.find('.', major_minor.find('.') + 1));
        bool well_formed = !numbers.empty() && release_of(numbers) == numbers;
        if (well_formed && (numbers != major_minor || python_free != runtime.free_threaded))
            return Failure{entry + ", but its python " + runtime.python + " is " + name +
                               ", a CPython " + numbers + " " + build_name(python_free) + " build",
                           hint};
    }
    return std::nullopt;
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

    std::string real_launcher = self_path();
    if (real_launcher.empty())
        return fail("cannot find unirun-python's own path in /proc/self/exe",
                    "unirun-python needs Linux's /proc mounted");
    // sys.executable: the path the launcher was started by, as python's is (a symlink stays a
    // symlink), so children and a ._pth beside that path see what this process saw.
    std::string launcher = invoked_path(argv[0], real_launcher);

    auto location_or_error = locate_manifest(real_launcher, launcher);
    if (std::holds_alternative<int>(location_or_error)) {
        std::string beside = (fs::path(real_launcher).parent_path() / "runtimes.json").string();
        std::string built = build_manifest_path();
        return fail("no runtime manifest: " + beside + " does not exist" +
                        (built.empty() || built == beside
                             ? std::string()
                             : ", nor does " + built + " in the build directory this launcher "
                                                       "was built in"),
                    "unirun-python finds its runtimes through the runtimes.json beside it "
                    "(symlinks to the launcher are followed) or where make install put it; run "
                    "it from its build directory, an install, or through a symlink, or set "
                    "UNIRUN_MANIFEST to a build's runtimes.json; make build (after "
                    "scripts/bootstrap) writes one");
    }
    const auto location = std::get<ManifestLocation>(location_or_error);
    const std::string &manifest_path = location.path;
    auto manifest_file = read_file(manifest_path);
    if (!manifest_file.text) {
        std::string message = "cannot read the runtime manifest " + manifest_path + " (" +
                              location.origin + "): " + std::strerror(manifest_file.error);
        if (manifest_file.error == EACCES) {
            std::string denied = first_denied(manifest_path, R_OK);
            return fail(message, "give " + this_user() + " read access to " +
                                     (denied.empty() ? manifest_path : denied) +
                                     ", or set UNIRUN_MANIFEST to a manifest it can read");
        }
        if (location.origin == "named by UNIRUN_MANIFEST")
            return fail(message, "point UNIRUN_MANIFEST at a build's runtimes.json (make build "
                                 "writes one), or unset it");
        return fail(message, "make build (after scripts/bootstrap) writes it");
    }
    auto manifest_or_error =
        parse_manifest(*manifest_file.text, fs::absolute(manifest_path).parent_path().string());
    if (auto *error = std::get_if<ManifestError>(&manifest_or_error))
        return fail(error->message + " in " + manifest_path, "rebuild with make build");
    const Manifest &manifest = std::get<Manifest>(manifest_or_error);

    auto request_or_error = make_request(options, getenv_string);
    if (auto *error = std::get_if<UsageError>(&request_or_error)) return fail(error->message);
    const Request &request = std::get<Request>(request_or_error);

    // Files beside the program, as python reads them beside itself (Modules/getpath.py): a
    // ._pth file (beside the program, or the runtime's python) makes the run isolated; a
    // pyvenv.cfg one level up (or beside) makes this a venv's launcher; PYTHONHOME (unless
    // -E/-I) overrides the venv's prefix. getpath itself applies all three to sys.path and the
    // prefixes, because the runtime starts it from this very path (handoff.python_executable).
    const bool pth = has_pth_file(launcher, real_launcher);
    const bool ignore_env = pth || python_ignores_environment(split.python);
    const bool python_home = !ignore_env && getenv_string("PYTHONHOME").value_or("") != "";
    // The venv the launcher sits in picks the runtime even under PYTHONHOME (python's binary in a
    // venv is that venv's python whatever PYTHONHOME says); getpath applies PYTHONHOME itself.
    std::optional<VirtualEnv> own_venv = venv_of_program(launcher);
    if (own_venv) match_runtime(*own_venv, manifest.runtimes);
    // VIRTUAL_ENV: only for a launcher outside any venv (python ignores it altogether).
    std::optional<VirtualEnv> activated =
        (own_venv || ignore_env || python_home) ? std::nullopt : activated_venv();
    if (activated) match_runtime(*activated, manifest.runtimes);
    auto selection_or_error =
        own_venv ? select_venv_runtime(manifest.runtimes, request, own_venv->runtime_tag,
                                       own_venv->root, own_venv->home)
                 : select_runtime(manifest.runtimes, request,
                                  activated ? activated->runtime_tag : std::nullopt);

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

    // getpath starts from the launcher's own path (so a venv, ._pth or PYTHONHOME around it
    // count as around python) and knows the runtime's python as the base executable (so the
    // prefix, the standard library and what venv links to are that python's).
    std::string python_executable = launcher;
    std::string executable = launcher;  // sys.executable
    // getpath looks for a ._pth beside the program and beside its real file (here the runtime's
    // python): one beside the launcher's real file alone is found by starting from there.
    if (pth && !has_pth_file(launcher, "")) python_executable = real_launcher;
    if (activated) {
        fs::path bin = fs::path(activated->root) / "bin";
        std::error_code error;
        if (activated->runtime_tag != runtime.tag) {
            std::cerr << "unirun-python: note: the active virtual environment " << activated->root
                      << " was not made from runtime " << runtime.tag
                      << ", so its packages are not importable; make it with "
                         "unirun-python --runtime=" << runtime.tag << " -m venv, or register its "
                         "interpreter (docs/runtimes.md)\n";
        } else if (fs::exists(bin / "unirun-python", error)) {
            // The venv's own launcher: console scripts pip installs now point there.
            python_executable = executable = (bin / "unirun-python").string();
        } else {
            for (const char *name : {"python3", "python"})
                if (fs::exists(bin / name, error)) {
                    python_executable = (bin / name).string();
                    break;
                }
        }
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

    // --metrics and --timeline: the runtime (unirun._metrics) writes them at exit, so a bad
    // path is found now, before the program runs for nothing.
    for (auto [value, variable, flag] : {std::tuple{&request.metrics, "UNIRUN_METRICS", "--metrics"},
                                         std::tuple{&request.timeline, "UNIRUN_TIMELINE", "--timeline"}}) {
        if (value->empty() || *value == "off") {
            if (!value->empty()) setenv(variable, value->c_str(), 1);
            continue;
        }
        std::error_code error;
        auto path = fs::absolute(*value, error);
        if (error) path = *value;
        auto dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
        if (path.extension() == ".py")  // `--metrics app.py`: the script, not a metrics file
            return fail(std::string(flag) + " " + path.string() + " names a Python script",
                        std::string("give ") + flag + "=PATH a metrics or timeline file, then the script");
        if (fs::is_directory(path, error) || access(dir.c_str(), W_OK | X_OK) != 0)
            return fail(std::string("cannot write ") + flag + " file " + path.string(),
                        std::string("give ") + flag + " (or " + variable +
                            ") the path of a file in a writable directory");
        setenv(variable, path.c_str(), 1);
    }
    // --venv-python: read by unirun._venv when this program (or a child) makes a venv.
    if (!request.venv_python.empty()) setenv("UNIRUN_VENV_PYTHON", request.venv_python.c_str(), 1);
    if (!request.metrics_interval.empty())
        setenv("UNIRUN_METRICS_INTERVAL", request.metrics_interval.c_str(), 1);

    // RTLD_GLOBAL: extension modules resolve the C API from the libpython this library loads.
    void *library = dlopen(runtime.library.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!library) {
        auto why = load_failure(runtime, dlerror(), manifest_path);
        return fail(why.message, why.hint);
    }
    auto runtime_main =
        reinterpret_cast<unirun_runtime_main_fn>(dlsym(library, UNIRUN_RUNTIME_MAIN_SYMBOL));
    if (!runtime_main)
        return fail(runtime.library + " has no " UNIRUN_RUNTIME_MAIN_SYMBOL,
                    "it is not a unirun runtime library; make build writes the right one and the "
                    "manifest that names it");
    // The manifest is a claim; the library just loaded is the fact. A wrong or swapped entry
    // would otherwise run, say, --thread-mode=gil on a free-threaded CPython.
    if (auto wrong = mismatch(runtime, library, manifest_path))
        return fail(wrong->message, wrong->hint);

    // --canary: this process runs the comparison (unirun._canary), which starts the launcher
    // once per run with the program's own arguments.
    std::vector<std::string> program = split.python;
    if (options.canary) {
        if (program.empty())
            return fail("--canary needs a program to run", "give a script, -m module or -c code after the options");
        setenv("UNIRUN_CANARY", options.canary->c_str(), 1);
        setenv("UNIRUN_CANARY_RUNS", options.canary_runs.value_or("1").c_str(), 1);
        setenv("UNIRUN_CANARY_LAUNCHER", launcher.c_str(), 1);
        if (options.canary_report) {
            std::error_code error;
            auto path = fs::absolute(*options.canary_report, error);
            if (error) path = *options.canary_report;
            auto dir = path.parent_path().empty() ? fs::path(".") : path.parent_path();
            if (fs::is_directory(path, error) || access(dir.c_str(), W_OK | X_OK) != 0)
                return fail("cannot write --canary-report file " + path.string(),
                            "give --canary-report the path of a file in a writable directory");
            setenv("UNIRUN_CANARY_REPORT", path.c_str(), 1);
        }
        program.insert(program.begin(), {"-m", "unirun._canary"});
    }
    std::vector<char *> python_argv;
    python_argv.push_back(argv[0]);
    for (auto &arg : program) python_argv.push_back(arg.data());
    python_argv.push_back(nullptr);

    unirun_handoff handoff{};
    handoff.version = UNIRUN_HANDOFF_VERSION;
    handoff.argc = static_cast<int>(python_argv.size() - 1);
    handoff.argv = python_argv.data();
    handoff.launcher = executable.c_str();
    handoff.python_executable = python_executable.c_str();
    handoff.base_executable = runtime.python.c_str();
    handoff.base_launcher = location.base_launcher.c_str();
    // A ._pth beside the runtime's python applies too (getpath looks beside the real executable).
    handoff.shims_by_finder = pth || has_pth_file(canonical_or_empty(runtime.python), "") ? 1 : 0;
    handoff.runtime_tag = runtime.tag.c_str();
    handoff.shims_dir = manifest.shims_dir.c_str();
    handoff.decision = selection.reason.c_str();
    handoff.compat = request.compat.c_str();
    handoff.process_pool = request.process_pool.c_str();
    return runtime_main(&handoff);
}
