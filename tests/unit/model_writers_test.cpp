// Output paths stay inside -o DIR; atomic writes leave no temporary files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "ocr/errors.h"
#include "writers/output.h"

namespace ocr {
namespace {

TEST(OutputPath, MirrorsTheInputAndNeverEscapes) {
  EXPECT_EQ(output_path("out", "a/b.pdf", "md"), "out/a/b.md");
  EXPECT_EQ(output_path("out", "scan.v2.png", "jsonl"), "out/scan.v2.jsonl");
  EXPECT_EQ(output_path("out", "../../etc/passwd", "md"), "out/etc/passwd.md");
  EXPECT_EQ(output_path("out", "/abs/x.png", "md"), "out/abs/x.md");
  EXPECT_EQ(output_path("out", "a/./../b/.hidden", "md"), "out/a/b/.hidden.md");
  EXPECT_EQ(output_path("out", "..", "md"), "out/output.md");
}

TEST(WriteFileAtomic, WritesCreatesFoldersAndLeavesNoTemporaryFile) {
  char tmpl[] = "/tmp/ocr-writers-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string path = dir + "/x y/ü/page.md";
  write_file_atomic(path, "hello\n");
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  EXPECT_EQ(ss.str(), "hello\n");
  EXPECT_FALSE(path_exists(path + ".tmp." + std::to_string(::getpid())));
  append_line(dir + "/_failed.jsonl", "{\"a\":1}");
  append_line(dir + "/_failed.jsonl", "{\"b\":2}");
  std::ifstream g(dir + "/_failed.jsonl");
  std::stringstream gs;
  gs << g.rdbuf();
  EXPECT_EQ(gs.str(), "{\"a\":1}\n{\"b\":2}\n");
  // An unwritable folder: a clear error naming the path, nothing left behind.
  ::chmod(dir.c_str(), 0500);
  if (::geteuid() != 0) {  // root ignores permission bits
    EXPECT_THROW(write_file_atomic(dir + "/other.md", "x"), InputError);
    EXPECT_FALSE(path_exists(dir + "/other.md"));
  }
  ::chmod(dir.c_str(), 0700);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace ocr
