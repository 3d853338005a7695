//! Where `import "..."` finds its file: `std/<name>` in the stdlib folder, anything else
//! relative to the rules folder, `.rhai` appended. No cache: a resolver lives for one load, so
//! an edited module is always read afresh. Every file read is recorded with its SHA-256.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope, AST};

/// The import prefix for shipped modules.
pub(crate) const STD_PREFIX: &str = "std/";

/// An import path that leaves its folder (absolute, `..`) or names no file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid module path {import:?}: use \"std/<name>\" for the stdlib or a path relative to the rules folder, without `..`")]
pub(crate) struct InvalidModulePath {
    pub import: String,
}

pub(crate) struct RuleResolver {
    rules_dir: PathBuf,
    stdlib_dir: PathBuf,
    read: Mutex<BTreeMap<PathBuf, String>>,
}

impl RuleResolver {
    pub(crate) fn new(rules_dir: &Path, stdlib_dir: &Path) -> RuleResolver {
        RuleResolver {
            rules_dir: rules_dir.to_path_buf(),
            stdlib_dir: stdlib_dir.to_path_buf(),
            read: Mutex::new(BTreeMap::new()),
        }
    }

    /// The file an import path names, or why the path is not acceptable. Paths stay inside
    /// their folder: no absolute paths, no `..`.
    pub(crate) fn file_for(&self, import: &str) -> Result<PathBuf, InvalidModulePath> {
        let (base, rel) = match import.strip_prefix(STD_PREFIX) {
            Some(rest) => (&self.stdlib_dir, rest),
            None => (&self.rules_dir, import),
        };
        let rel_path = Path::new(rel);
        let clean = !rel.is_empty()
            && !rel.ends_with('/')
            && rel_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !clean {
            return Err(InvalidModulePath {
                import: import.to_string(),
            });
        }
        let mut file = base.join(rel_path);
        let name = format!(
            "{}.rhai",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        file.set_file_name(name);
        Ok(file)
    }

    /// Files read so far, with their SHA-256.
    pub(crate) fn files_read(&self) -> Vec<(PathBuf, String)> {
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, h)| (p.clone(), h.clone()))
            .collect()
    }

    fn compile(
        &self,
        engine: &Engine,
        import: &str,
        pos: Position,
    ) -> Result<AST, Box<EvalAltResult>> {
        let file = self.file_for(import).map_err(|msg| {
            Box::new(EvalAltResult::ErrorInModule(
                import.to_string(),
                EvalAltResult::ErrorRuntime(msg.to_string().into(), Position::NONE).into(),
                pos,
            ))
        })?;
        let text = std::fs::read_to_string(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Box::new(EvalAltResult::ErrorModuleNotFound(import.to_string(), pos))
            }
            _ => Box::new(EvalAltResult::ErrorInModule(
                import.to_string(),
                EvalAltResult::ErrorRuntime(
                    format!("cannot read {}: {e}", file.display()).into(),
                    Position::NONE,
                )
                .into(),
                pos,
            )),
        })?;
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(file.clone(), super::sha256_hex(text.as_bytes()));
        let mut ast = engine.compile(&text).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                import.to_string(),
                EvalAltResult::ErrorParsing(*e.0, e.1).into(),
                pos,
            ))
        })?;
        if let Some(found) = super::lint::shadowed_methods(&text).first() {
            let at = Position::new(
                u16::try_from(found.line).unwrap_or(u16::MAX),
                u16::try_from(found.column).unwrap_or(u16::MAX),
            );
            return Err(Box::new(EvalAltResult::ErrorInModule(
                import.to_string(),
                EvalAltResult::ErrorRuntime(found.message().into(), at).into(),
                pos,
            )));
        }
        // Errors inside the module's functions then name its file.
        ast.set_source(file.display().to_string());
        Ok(ast)
    }
}

/// The engine owns its resolver; the load keeps a second handle to read back what was resolved.
pub(crate) struct SharedResolver(pub(crate) Arc<RuleResolver>);

impl ModuleResolver for SharedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        let ast = self.0.compile(engine, path, pos)?;
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        Ok(module.into())
    }

    fn resolve_ast(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Option<Result<AST, Box<EvalAltResult>>> {
        Some(self.0.compile(engine, path, pos))
    }
}
