//! A valid component of another world (`test:other/other`): the sandbox must call it `invalid`.

// The generated bindings and their export are unsafe FFI glue.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "other" });

    struct Other;

    impl Guest for Other {
        fn hello() -> String {
            "hello from another world".to_string()
        }
    }

    export!(Other);
}
