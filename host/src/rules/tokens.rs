//! A rule file's tokens as Rhai's own tokenizer reads them: the positions the AST does not keep,
//! for the hooks' and properties' diagnostics and for `lint`. The lowest floor of `rules`: it
//! depends on Rhai alone.

use rhai::{Engine, Position, Token};

/// The file's tokens as Rhai's own tokenizer reads them (comments dropped, strings whole), for
/// the positions the AST does not keep and for `lint`. Where an interpolation `${...}` ends is the parser's call,
/// not the tokenizer's: the braces are counted here and the rest of the string handed back to the
/// tokenizer, as the parser does.
pub(crate) fn tokens(text: &str) -> Vec<(Token, Position)> {
    let engine = Engine::new_raw();
    let inputs = [text];
    let (stream, control) = engine.lex(&inputs);
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut interpolations: Vec<usize> = Vec::new();
    for (tok, pos) in stream {
        match &tok {
            // The file compiled, so a lexer error is not expected; stop rather than guess.
            Token::EOF | Token::LexError(_) => break,
            Token::InterpolatedString(_) => interpolations.push(depth),
            Token::LeftBrace | Token::MapStart => depth += 1,
            Token::RightBrace => {
                depth = depth.saturating_sub(1);
                if interpolations.last() == Some(&depth) {
                    interpolations.pop();
                    control.borrow_mut().is_within_text = true;
                }
            }
            _ => {}
        }
        out.push((tok, pos));
    }
    out
}
