//! Role misuse is a compile error: each case in `ui/` must fail to build, with the
//! diagnostic recorded beside it.

#[test]
fn role_misuse_does_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
