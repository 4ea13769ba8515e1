#include "launcher/runtimes.hpp"

#include <doctest/doctest.h>

using namespace unirun::launcher;

namespace {

Runtime make(std::string tag, std::string version, bool free_threaded) {
    return Runtime{tag, version, free_threaded, "/rt/" + tag + "/bin/python", "/lib/" + tag + ".so"};
}

const std::vector<Runtime> kBoth = {make("cp313", "3.13.5", false), make("cp313t", "3.13.5", true)};

Request request(ThreadMode mode, Source source = Source::CommandLine) {
    Request r;
    r.thread_mode = mode;
    r.thread_mode_source = mode == ThreadMode::Auto ? Source::Default : source;
    return r;
}

std::string code_of(const std::vector<Runtime> &runtimes, const Request &r,
                    std::optional<std::string> venv = std::nullopt) {
    auto result = select_runtime(runtimes, r, venv);
    REQUIRE(std::holds_alternative<Selection>(result));
    return std::get<Selection>(result).code;
}

std::string pick(const std::vector<Runtime> &runtimes, const Request &r,
                 std::optional<std::string> venv = std::nullopt) {
    auto result = select_runtime(runtimes, r, venv);
    REQUIRE(std::holds_alternative<Selection>(result));
    return std::get<Selection>(result).runtime->tag;
}

SelectionError refuse(const std::vector<Runtime> &runtimes, const Request &r) {
    auto result = select_runtime(runtimes, r, std::nullopt);
    REQUIRE(std::holds_alternative<SelectionError>(result));
    return std::get<SelectionError>(result);
}

}  // namespace

TEST_CASE("explicit thread modes pick the matching build") {
    CHECK(pick(kBoth, request(ThreadMode::Gil)) == "cp313");
    CHECK(pick(kBoth, request(ThreadMode::NoGil)) == "cp313t");
}

TEST_CASE("auto follows its documented order") {
    CHECK(pick(kBoth, request(ThreadMode::Auto)) == "cp313");
    Request gil_off = request(ThreadMode::Auto);
    gil_off.python_gil_off = true;
    CHECK(pick(kBoth, gil_off) == "cp313t");
    CHECK(pick(kBoth, request(ThreadMode::Auto), "cp313t") == "cp313t");
    CHECK(pick({make("cp313t", "3.13.5", true)}, request(ThreadMode::Auto)) == "cp313t");
    // PYTHON_GIL=0 with no free-threaded runtime still runs, on the GIL build
    CHECK(pick({make("cp313", "3.13.5", false)}, gil_off) == "cp313");
}

TEST_CASE("the newest version wins; manifest order breaks ties") {
    std::vector<Runtime> runtimes = {make("cp311", "3.11.7", false), make("cp313", "3.13.5", false),
                                     make("cp312", "3.12.10", false), make("cp313b", "3.13.5", false)};
    CHECK(pick(runtimes, request(ThreadMode::Auto)) == "cp313");
    CHECK(pick(runtimes, request(ThreadMode::Gil)) == "cp313");
    std::vector<Runtime> older_first = {make("cp39", "3.9.18", false), make("cp310", "3.10.13", false)};
    CHECK(pick(older_first, request(ThreadMode::Auto)) == "cp310");
}

TEST_CASE("a virtual environment's runtime is preferred when it fits the mode") {
    CHECK(pick(kBoth, request(ThreadMode::NoGil), "cp313t") == "cp313t");
    CHECK(pick(kBoth, request(ThreadMode::Gil), "cp313t") == "cp313");
    CHECK(pick(kBoth, request(ThreadMode::Auto), "unknown") == "cp313");
}

TEST_CASE("nogil with no free-threaded runtime names what is missing and how to get it") {
    auto error = refuse({make("cp313", "3.13.5", false)}, request(ThreadMode::NoGil));
    CHECK(error.message.find("--thread-mode=nogil") != std::string::npos);
    CHECK(error.message.find("free-threaded") != std::string::npos);
    CHECK(error.message.find("cp313 (3.13.5, GIL)") != std::string::npos);
    CHECK(error.hint.find("scripts/bootstrap") != std::string::npos);

    error = refuse({make("cp313t", "3.13.5", true)}, request(ThreadMode::Gil, Source::Environment));
    CHECK(error.message.find("UNIRUN_THREAD_MODE=gil") != std::string::npos);
}

TEST_CASE("every choice has a stable reason code, and the trace line carries it") {
    CHECK(code_of(kBoth, request(ThreadMode::Auto)) == "newest-gil");
    CHECK(code_of(kBoth, request(ThreadMode::NoGil)) == "thread-mode");
    CHECK(code_of(kBoth, request(ThreadMode::Auto), "cp313t") == "venv");
    CHECK(code_of({make("cp313t", "3.13.5", true)}, request(ThreadMode::Auto)) == "newest-free-threaded");
    Request gil_off = request(ThreadMode::Auto);
    gil_off.python_gil_off = true;
    CHECK(code_of(kBoth, gil_off) == "python-gil-0");
    Request tagged = request(ThreadMode::Auto);
    tagged.runtime = "cp313";
    CHECK(code_of(kBoth, tagged) == "runtime-tag");

    auto selection = std::get<Selection>(select_runtime(kBoth, request(ThreadMode::NoGil), std::nullopt));
    auto line = selection_json(selection, request(ThreadMode::NoGil));
    CHECK(line.find("\"event\":\"runtime\"") != std::string::npos);
    CHECK(line.find("\"resolved_runtime\":\"cp313t\"") != std::string::npos);
    CHECK(line.find("\"reason_code\":\"thread-mode\"") != std::string::npos);
    CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("no runtime at all is an error") {
    auto error = refuse({}, request(ThreadMode::Auto));
    CHECK(error.message.find("no CPython runtime") != std::string::npos);
}

TEST_CASE("runtimes by tag") {
    Request r = request(ThreadMode::Auto);
    r.runtime = "cp313t";
    r.runtime_source = Source::CommandLine;
    CHECK(pick(kBoth, r) == "cp313t");

    r.runtime = "cp399";
    auto error = refuse(kBoth, r);
    CHECK(error.message.find("--runtime=cp399") != std::string::npos);
    CHECK(error.message.find("cp313t (3.13.5, free-threaded)") != std::string::npos);

    r.runtime_source = Source::Environment;
    CHECK(refuse(kBoth, r).message.find("UNIRUN_RUNTIME=cp399") != std::string::npos);

    Request conflict = request(ThreadMode::Gil);
    conflict.runtime = "cp313t";
    conflict.runtime_source = Source::CommandLine;
    error = refuse(kBoth, conflict);
    CHECK(error.message.find("contradicts --thread-mode=gil") != std::string::npos);
}

TEST_CASE("the manifest parses, and a malformed one is an error") {
    auto parsed = parse_manifest(
        R"({"shims": "/src/stdlib-shims", "runtimes": [
            {"tag": "cp313t", "version": "3.13.5", "free_threaded": true,
             "python": "/rt/bin/python3.13t", "library": "unirun-runtime-cp313t.so"}]})",
        "/build");
    REQUIRE(std::holds_alternative<Manifest>(parsed));
    const auto &manifest = std::get<Manifest>(parsed);
    CHECK(manifest.shims_dir == "/src/stdlib-shims");
    REQUIRE(manifest.runtimes.size() == 1);
    CHECK(manifest.runtimes[0].free_threaded);
    CHECK(manifest.runtimes[0].library == "/build/unirun-runtime-cp313t.so");

    CHECK(std::holds_alternative<ManifestError>(parse_manifest("{", "/b")));
    CHECK(std::holds_alternative<ManifestError>(parse_manifest(R"({"runtimes": []})", "/b")));
    CHECK(std::holds_alternative<ManifestError>(
        parse_manifest(R"({"shims": "", "runtimes": [{"tag": 1}]})", "/b")));
}

TEST_CASE("listings show every runtime and mark the auto choice") {
    auto table = runtimes_table(kBoth, &kBoth[0]);
    CHECK(table.find("cp313t") != std::string::npos);
    CHECK(table.find("free-threaded") != std::string::npos);
    CHECK(table.find("*") != std::string::npos);
    auto json = runtimes_json(kBoth);
    CHECK(json.find("\"free_threaded\": true") != std::string::npos);
    CHECK(json.find("\"path\": \"/rt/cp313/bin/python\"") != std::string::npos);
}

TEST_CASE("a launcher inside a venv runs the venv's runtime; only the command line may object") {
    auto venv_pick = [](const Request &r, std::optional<std::string> tag) {
        return select_venv_runtime(kBoth, r, tag, "/v", "/rt/cp313t/bin");
    };
    auto chosen = venv_pick(request(ThreadMode::Auto), "cp313t");
    REQUIRE(std::holds_alternative<Selection>(chosen));
    CHECK(std::get<Selection>(chosen).runtime->tag == "cp313t");
    CHECK(std::get<Selection>(chosen).code == "venv");
    // inherited from the environment (a parent on the other runtime): the venv wins
    Request inherited = request(ThreadMode::Gil, Source::Environment);
    inherited.runtime = "cp313";
    inherited.runtime_source = Source::Environment;
    REQUIRE(std::holds_alternative<Selection>(venv_pick(inherited, "cp313t")));
    CHECK(std::get<Selection>(venv_pick(inherited, "cp313t")).runtime->tag == "cp313t");
    // on the command line: an error naming the venv and the way out
    auto refused = venv_pick(request(ThreadMode::Gil), "cp313t");
    REQUIRE(std::holds_alternative<SelectionError>(refused));
    CHECK(std::get<SelectionError>(refused).message.find("/v") != std::string::npos);
    CHECK(std::get<SelectionError>(refused).hint.find("-m venv") != std::string::npos);
    Request by_tag = request(ThreadMode::Auto);
    by_tag.runtime = "cp313";
    by_tag.runtime_source = Source::CommandLine;
    CHECK(std::holds_alternative<SelectionError>(venv_pick(by_tag, "cp313t")));
    by_tag.runtime = "cp313t";
    CHECK(std::holds_alternative<Selection>(venv_pick(by_tag, "cp313t")));
    // a venv of no registered runtime
    auto unknown = venv_pick(request(ThreadMode::Auto), std::nullopt);
    REQUIRE(std::holds_alternative<SelectionError>(unknown));
    CHECK(std::get<SelectionError>(unknown).message.find("/rt/cp313t/bin") != std::string::npos);
}

TEST_CASE("an installed manifest names its shims and libraries relative to itself") {
    auto parsed = parse_manifest(
        R"({"shims": "shims", "runtimes": [
            {"tag": "cp313", "version": "3.13.5", "free_threaded": false,
             "python": "/rt/bin/python3.13", "library": "unirun-runtime-cp313.so"}]})",
        "/opt/u/lib/unirun");
    REQUIRE(std::holds_alternative<Manifest>(parsed));
    CHECK(std::get<Manifest>(parsed).shims_dir == "/opt/u/lib/unirun/shims");
    CHECK(std::get<Manifest>(parsed).runtimes[0].library == "/opt/u/lib/unirun/unirun-runtime-cp313.so");
    CHECK(install_manifest_path() == "../lib/unirun/runtimes.json");
}
