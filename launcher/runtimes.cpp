#include "runtimes.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <sstream>

namespace unirun::launcher {

namespace {

std::vector<int> version_key(const std::string &version) {
    std::vector<int> key;
    std::istringstream in(version);
    std::string part;
    while (std::getline(in, part, '.')) {
        int number = 0;
        for (char c : part) {
            if (c < '0' || c > '9') break;
            number = number * 10 + (c - '0');
        }
        key.push_back(number);
    }
    return key;
}

// The newest runtime of the wanted build; manifest order breaks ties, so the choice is stable.
const Runtime *newest(const std::vector<Runtime> &runtimes, bool free_threaded) {
    const Runtime *best = nullptr;
    for (const auto &runtime : runtimes) {
        if (runtime.free_threaded != free_threaded) continue;
        if (!best || version_key(runtime.version) > version_key(best->version)) best = &runtime;
    }
    return best;
}

const Runtime *find_tag(const std::vector<Runtime> &runtimes, const std::string &tag) {
    for (const auto &runtime : runtimes)
        if (runtime.tag == tag) return &runtime;
    return nullptr;
}

std::string describe(const Runtime &runtime) {
    return runtime.tag + " (" + runtime.version + ", " +
           (runtime.free_threaded ? "free-threaded" : "GIL") + ")";
}

std::string registered(const std::vector<Runtime> &runtimes) {
    if (runtimes.empty()) return "none";
    std::string list;
    for (const auto &runtime : runtimes) list += (list.empty() ? "" : ", ") + describe(runtime);
    return list;
}

std::string mode_origin(const Request &request) {
    switch (request.thread_mode_source) {
        case Source::CommandLine: return "--thread-mode=" + std::string(to_string(request.thread_mode));
        case Source::Environment:
            return "UNIRUN_THREAD_MODE=" + std::string(to_string(request.thread_mode));
        case Source::Default: break;
    }
    return "thread mode auto";
}

constexpr const char *kBootstrapHint =
    "run scripts/bootstrap, which builds cp313 and cp313t, or register an interpreter you "
    "have (docs/runtimes.md); then make build";

}  // namespace

std::string build_manifest_path() {
#ifdef UNIRUN_BUILD_MANIFEST
    return UNIRUN_BUILD_MANIFEST;
#else
    return "";
#endif
}

std::string install_manifest_path() {
#ifdef UNIRUN_INSTALL_MANIFEST
    return UNIRUN_INSTALL_MANIFEST;
#else
    return "";
#endif
}

std::variant<Manifest, ManifestError> parse_manifest(const std::string &text,
                                                      const std::string &base_dir) {
    try {
        auto json = nlohmann::json::parse(text);
        Manifest manifest;
        manifest.shims_dir = json.at("shims").get<std::string>();
        // An installed manifest names the shims and libraries beside it (relative), so the
        // installed tree works wherever DESTDIR staging or a move puts it.
        if (!manifest.shims_dir.empty() && manifest.shims_dir.front() != '/')
            manifest.shims_dir = base_dir + "/" + manifest.shims_dir;
        for (const auto &entry : json.at("runtimes")) {
            Runtime runtime;
            runtime.tag = entry.at("tag").get<std::string>();
            runtime.version = entry.at("version").get<std::string>();
            runtime.free_threaded = entry.at("free_threaded").get<bool>();
            runtime.python = entry.at("python").get<std::string>();
            runtime.library = entry.at("library").get<std::string>();
            if (!runtime.library.empty() && runtime.library.front() != '/')
                runtime.library = base_dir + "/" + runtime.library;
            manifest.runtimes.push_back(std::move(runtime));
        }
        return manifest;
    } catch (const nlohmann::json::exception &error) {
        return ManifestError{std::string("malformed runtime manifest: ") + error.what()};
    }
}

std::variant<Selection, SelectionError> select_runtime(const std::vector<Runtime> &runtimes,
                                                       const Request &request,
                                                       const std::optional<std::string> &venv_runtime) {
    if (runtimes.empty())
        return SelectionError{"no CPython runtime is registered", kBootstrapHint};

    if (request.runtime) {
        const Runtime *runtime = find_tag(runtimes, *request.runtime);
        std::string origin = request.runtime_source == Source::CommandLine
                                 ? "--runtime=" + *request.runtime
                                 : "UNIRUN_RUNTIME=" + *request.runtime;
        if (!runtime)
            return SelectionError{origin + " names no registered runtime (registered: " +
                                      registered(runtimes) + ")",
                                  "pick a tag from unirun-python --list-runtimes"};
        bool wants_free = request.thread_mode == ThreadMode::NoGil;
        if (request.thread_mode != ThreadMode::Auto && runtime->free_threaded != wants_free)
            return SelectionError{origin + " is " + describe(*runtime) + ", which contradicts " +
                                      mode_origin(request),
                                  "drop one of the two, or pick a runtime that matches"};
        return Selection{runtime, origin + " picked " + describe(*runtime), "runtime-tag"};
    }

    const Runtime *venv = venv_runtime ? find_tag(runtimes, *venv_runtime) : nullptr;
    if (request.thread_mode != ThreadMode::Auto) {
        bool free_threaded = request.thread_mode == ThreadMode::NoGil;
        if (venv && venv->free_threaded == free_threaded)
            return Selection{venv, mode_origin(request) + " picked " + describe(*venv) +
                                       ", the runtime of the active virtual environment", "venv"};
        if (const Runtime *runtime = newest(runtimes, free_threaded))
            return Selection{runtime, mode_origin(request) + " picked " + describe(*runtime) +
                                          ", the newest " +
                                          (free_threaded ? "free-threaded" : "GIL") + " runtime",
                             "thread-mode"};
        return SelectionError{
            mode_origin(request) + " needs a " +
                (free_threaded ? "free-threaded (--disable-gil) CPython runtime"
                               : "CPython runtime with the GIL") +
                ", and none is registered (registered: " + registered(runtimes) + ")",
            std::string(kBootstrapHint) + "; or use --thread-mode=auto"};
    }

    std::string origin = mode_origin(request);
    if (venv)
        return Selection{venv, origin + " picked " + describe(*venv) +
                                   ", the runtime of the active virtual environment", "venv"};
    if (request.python_gil_off)
        if (const Runtime *runtime = newest(runtimes, true))
            return Selection{runtime, origin + " picked " + describe(*runtime) +
                                          " because PYTHON_GIL=0 asks for free threading",
                             "python-gil-0"};
    if (const Runtime *runtime = newest(runtimes, false))
        return Selection{runtime, origin + " picked " + describe(*runtime) +
                                      ", the newest GIL runtime, as python3 would be",
                         "newest-gil"};
    const Runtime *runtime = newest(runtimes, true);
    return Selection{runtime, origin + " picked " + describe(*runtime) +
                                  ", the newest runtime; no GIL runtime is registered",
                     "newest-free-threaded"};
}

std::variant<Selection, SelectionError> select_venv_runtime(const std::vector<Runtime> &runtimes,
                                                            const Request &request,
                                                            const std::optional<std::string> &venv_runtime,
                                                            const std::string &venv_root,
                                                            const std::string &venv_home) {
    const Runtime *venv = venv_runtime ? find_tag(runtimes, *venv_runtime) : nullptr;
    if (!venv)
        return SelectionError{
            "the virtual environment " + venv_root + " was made from the python in " + venv_home +
                ", which is no registered runtime (registered: " + registered(runtimes) + ")",
            "make the environment with unirun-python -m venv DIR, or register that interpreter "
            "(docs/runtimes.md) and run make build"};
    std::string where = "the virtual environment " + venv_root + " runs " + describe(*venv);
    std::string remake = std::string("make an environment for it: unirun-python ") +
                         "--thread-mode=MODE -m venv DIR, or run a unirun-python outside " + venv_root;
    if (request.runtime && request.runtime_source == Source::CommandLine && *request.runtime != venv->tag)
        return SelectionError{"--runtime=" + *request.runtime + " contradicts the launcher's own "
                              "place: " + where, remake};
    if (request.thread_mode != ThreadMode::Auto && request.thread_mode_source == Source::CommandLine &&
        venv->free_threaded != (request.thread_mode == ThreadMode::NoGil))
        return SelectionError{mode_origin(request) + " contradicts the launcher's own place: " + where,
                              remake};
    return Selection{venv, "the launcher was started from the virtual environment " + venv_root +
                               ", made from " + describe(*venv), "venv"};
}

std::string selection_json(const Selection &selection, const Request &request) {
    nlohmann::json trace = {
        {"kind", "runtime"},
        {"requested_thread_mode", std::string(to_string(request.thread_mode))},
        {"resolved_runtime", selection.runtime->tag},
        {"version", selection.runtime->version},
        {"free_threaded", selection.runtime->free_threaded},
        {"reason_code", selection.code},
        {"reason", selection.reason},
    };
    return nlohmann::json({{"event", "runtime"}, {"trace", trace}}).dump();
}

std::string runtimes_table(const std::vector<Runtime> &runtimes, const Runtime *chosen) {
    size_t tag_width = 3, version_width = 7;
    for (const auto &runtime : runtimes) {
        tag_width = std::max(tag_width, runtime.tag.size());
        version_width = std::max(version_width, runtime.version.size());
    }
    auto pad = [](std::string text, size_t width) {
        text.resize(std::max(width, text.size()), ' ');
        return text;
    };
    std::ostringstream out;
    out << pad("TAG", tag_width) << "  " << pad("VERSION", version_width) << "  "
        << pad("BUILD", 13) << "  AUTO  PYTHON\n";
    for (const auto &runtime : runtimes) {
        out << pad(runtime.tag, tag_width) << "  " << pad(runtime.version, version_width) << "  "
            << pad(runtime.free_threaded ? "free-threaded" : "gil", 13) << "  "
            << (&runtime == chosen ? "*   " : "    ") << "  " << runtime.python << "\n";
    }
    return out.str();
}

std::string runtimes_json(const std::vector<Runtime> &runtimes) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto &runtime : runtimes)
        list.push_back({{"tag", runtime.tag},
                        {"version", runtime.version},
                        {"free_threaded", runtime.free_threaded},
                        {"path", runtime.python}});
    return list.dump(2) + "\n";
}

}  // namespace unirun::launcher
