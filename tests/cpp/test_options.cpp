#include "launcher/options.hpp"

#include <doctest/doctest.h>

#include <map>

using namespace unirun::launcher;

namespace {

SplitArguments split(std::vector<std::string> args) { return split_arguments(args); }

EnvLookup env_of(std::map<std::string, std::string> values) {
    return [values](const std::string &name) -> std::optional<std::string> {
        auto it = values.find(name);
        if (it == values.end()) return std::nullopt;
        return it->second;
    };
}

Options parse_ok(std::vector<std::string> args) {
    auto parsed = parse_options(args);
    REQUIRE(std::holds_alternative<Options>(parsed));
    return std::get<Options>(parsed);
}

std::string parse_error(std::vector<std::string> args) {
    auto parsed = parse_options(args);
    REQUIRE(std::holds_alternative<UsageError>(parsed));
    return std::get<UsageError>(parsed).message;
}

}  // namespace

TEST_CASE("unirun options end where python's command line starts") {
    auto s = split({"--thread-mode=gil", "-c", "print(1)", "--thread-mode=nogil"});
    CHECK(s.unirun == std::vector<std::string>{"--thread-mode=gil"});
    CHECK(s.python == std::vector<std::string>{"-c", "print(1)", "--thread-mode=nogil"});

    s = split({"--trace", "t.jsonl", "-c", "pass"});
    CHECK(s.unirun == std::vector<std::string>{"--trace", "t.jsonl"});

    s = split({"--runtime", "cp313t", "script.py", "--runtime"});
    CHECK(s.unirun == std::vector<std::string>{"--runtime", "cp313t"});
    CHECK(s.python == std::vector<std::string>{"script.py", "--runtime"});

    s = split({"-"});
    CHECK(s.unirun.empty());
    CHECK(s.python == std::vector<std::string>{"-"});

    s = split({});
    CHECK(s.unirun.empty());
    CHECK(s.python.empty());
}

TEST_CASE("CPython's own long options belong to python") {
    for (std::string option : {"--version", "--help", "--help-env", "--help-xoptions", "--help-all",
                               "--check-hash-based-pycs", "--check-hash-based-pycs=always"}) {
        auto s = split({"--thread-mode=gil", option, "x"});
        CHECK(s.unirun == std::vector<std::string>{"--thread-mode=gil"});
        CHECK(s.python.front() == option);
    }
}

TEST_CASE("a lone -- ends unirun's options and is kept for python") {
    auto s = split({"--thread-mode=gil", "--", "--weird-script-name.py"});
    CHECK(s.unirun == std::vector<std::string>{"--thread-mode=gil"});
    CHECK(s.python == std::vector<std::string>{"--", "--weird-script-name.py"});
    s = split({"--", "--weird-script-name.py"});
    CHECK(s.unirun.empty());
    CHECK(s.python == std::vector<std::string>{"--", "--weird-script-name.py"});
}

TEST_CASE("options parse, in both spellings") {
    CHECK(parse_ok({}).thread_mode == std::nullopt);
    CHECK(parse_ok({"--thread-mode=nogil"}).thread_mode == ThreadMode::NoGil);
    CHECK(parse_ok({"--thread-mode", "gil"}).thread_mode == ThreadMode::Gil);
    CHECK(parse_ok({"--thread-mode=auto"}).thread_mode == ThreadMode::Auto);
    CHECK(parse_ok({"--runtime=cp313t"}).runtime == "cp313t");
    auto listing = parse_ok({"--list-runtimes", "--json"});
    CHECK(listing.list_runtimes);
    CHECK(listing.json);
    CHECK(parse_ok({"--unirun-version"}).version);
    CHECK(parse_ok({"--trace=/tmp/t.jsonl"}).trace == "/tmp/t.jsonl");
    CHECK(parse_ok({"--trace", "t.jsonl"}).trace == "t.jsonl");
    CHECK(parse_ok({"--unirun-help"}).help);
}

TEST_CASE("every bad option is a usage error naming it") {
    CHECK(parse_error({"--thread-mode=fast"}).find("--thread-mode=fast") != std::string::npos);
    CHECK(parse_error({"--thread-mod=gil"}).find("--thread-mod") != std::string::npos);
    CHECK(parse_error({"--no-such-option"}).find("--no-such-option") != std::string::npos);
    CHECK(parse_error({"--thread-mode"}).find("thread-mode") != std::string::npos);
    CHECK(parse_error({"--runtime="}).find("--runtime") != std::string::npos);
    CHECK(parse_error({"--json"}).find("--list-runtimes") != std::string::npos);
    CHECK(parse_error({"--trace="}).find("--trace") != std::string::npos);
}

TEST_CASE("thread mode names round-trip") {
    for (auto mode : {ThreadMode::Auto, ThreadMode::Gil, ThreadMode::NoGil})
        CHECK(parse_thread_mode(to_string(mode)) == mode);
    CHECK_FALSE(parse_thread_mode("GIL"));
    CHECK_FALSE(parse_thread_mode(""));
}

TEST_CASE("environment twins: the command line wins, bad values are errors") {
    auto request = std::get<Request>(make_request(parse_ok({}), env_of({})));
    CHECK(request.thread_mode == ThreadMode::Auto);
    CHECK(request.thread_mode_source == Source::Default);
    CHECK_FALSE(request.runtime);

    request = std::get<Request>(make_request(parse_ok({}), env_of({{"UNIRUN_THREAD_MODE", "nogil"}})));
    CHECK(request.thread_mode == ThreadMode::NoGil);
    CHECK(request.thread_mode_source == Source::Environment);

    request = std::get<Request>(make_request(parse_ok({"--thread-mode=gil"}),
                                             env_of({{"UNIRUN_THREAD_MODE", "nogil"}})));
    CHECK(request.thread_mode == ThreadMode::Gil);
    CHECK(request.thread_mode_source == Source::CommandLine);

    // An empty variable counts as unset, like python's own PYTHON* variables.
    request = std::get<Request>(make_request(parse_ok({}), env_of({{"UNIRUN_THREAD_MODE", ""}})));
    CHECK(request.thread_mode_source == Source::Default);

    auto bad = make_request(parse_ok({}), env_of({{"UNIRUN_THREAD_MODE", "turbo"}}));
    REQUIRE(std::holds_alternative<UsageError>(bad));
    CHECK(std::get<UsageError>(bad).message.find("UNIRUN_THREAD_MODE=turbo") != std::string::npos);
    CHECK(std::get<UsageError>(bad).message.find("auto, gil or nogil") != std::string::npos);
}

TEST_CASE("UNIRUN_RUNTIME is inherited unless the command line picks a thread mode") {
    auto request = std::get<Request>(make_request(parse_ok({}), env_of({{"UNIRUN_RUNTIME", "cp313t"}})));
    CHECK(request.runtime == "cp313t");
    CHECK(request.runtime_source == Source::Environment);

    request = std::get<Request>(
        make_request(parse_ok({"--thread-mode=gil"}), env_of({{"UNIRUN_RUNTIME", "cp313t"}})));
    CHECK_FALSE(request.runtime);

    request = std::get<Request>(
        make_request(parse_ok({"--runtime=cp313"}), env_of({{"UNIRUN_RUNTIME", "cp313t"}})));
    CHECK(request.runtime == "cp313");
    CHECK(request.runtime_source == Source::CommandLine);
}

TEST_CASE("PYTHON_GIL=0 is noticed") {
    CHECK(std::get<Request>(make_request(parse_ok({}), env_of({{"PYTHON_GIL", "0"}}))).python_gil_off);
    CHECK_FALSE(std::get<Request>(make_request(parse_ok({}), env_of({{"PYTHON_GIL", "1"}}))).python_gil_off);
}

TEST_CASE("help and usage name every option") {
    auto help = help_text();
    for (auto option : {"--thread-mode", "--runtime", "--trace", "--list-runtimes", "--json",
                        "--unirun-version", "--unirun-help"}) {
        CHECK(help.find(option) != std::string::npos);
        CHECK(usage_line().find(option) != std::string::npos);
    }
}
