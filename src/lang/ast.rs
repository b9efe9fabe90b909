//! The syntax tree of an objective file.
//!
//! Every expression is an arena of nodes in post-order: a node's operands always come
//! before it and the root is the last node. Walking an expression is therefore a loop,
//! never a recursion, so a megabyte-long operator chain can be checked, compiled and
//! dropped without touching the call stack.

use super::source::Span;

/// Index of a node inside its [`Expr`].
pub type NodeId = u32;

/// An expression: nodes in post-order, the root last.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// The nodes; operands precede their operator.
    pub nodes: Vec<Node>,
}

impl Expr {
    /// The root node's index.
    pub fn root(&self) -> NodeId {
        // An `Expr` is never empty: the parser always pushes at least one node.
        (self.nodes.len().saturating_sub(1)) as NodeId
    }

    /// The node at an index.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    /// The span of the whole expression.
    pub fn span(&self) -> Span {
        self.nodes.last().map_or(Span::default(), |n| n.span)
    }

    /// The same expression with every span zeroed: two expressions that differ only
    /// in layout (spaces, redundant parentheses) compare equal this way.
    pub fn without_spans(&self) -> Expr {
        self.clone().map_spans(|_| Span::default())
    }

    /// The same expression with every span moved `by` bytes later: an expression
    /// compiled against a file keeps its spans apart from the file's
    /// ([`Sources`](super::source::Sources)).
    pub fn shifted(self, by: usize) -> Expr {
        self.map_spans(|s| Span::new(s.start + by, s.end + by))
    }

    fn map_spans(mut self, f: impl Fn(Span) -> Span) -> Expr {
        for n in &mut self.nodes {
            n.span = f(n.span);
            match &mut n.kind {
                NodeKind::Index { name, .. } => name.span = f(name.span),
                NodeKind::Column { data, column, .. } => {
                    data.span = f(data.span);
                    column.span = f(column.span);
                }
                NodeKind::Call { func, .. } => func.span = f(func.span),
                NodeKind::Reduce { index, .. } => index.span = f(index.span),
                _ => {}
            }
        }
        self
    }

    /// A one-node expression.
    pub fn leaf(kind: NodeKind, span: Span) -> Expr {
        Expr {
            nodes: vec![Node { kind, span }],
        }
    }
}

/// One node of an expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it is in the source.
    pub span: Span,
}

/// Binary operators, loosest to tightest: `+ -`, `* /`, `^`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `^` (right associative)
    Pow,
}

impl BinOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Pow => "^",
        }
    }

    /// Binding strength; unary minus sits at 3, between `*` and `^`.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            BinOp::Mul | BinOp::Div => 2,
            BinOp::Pow => 4,
        }
    }

    /// Whether `a op b op c` groups as `a op (b op c)`.
    pub fn right_associative(self) -> bool {
        matches!(self, BinOp::Pow)
    }
}

/// Precedence of unary minus.
pub const NEG_PRECEDENCE: u8 = 3;

/// `sum`, `prod` or `logsumexp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// `sum(i = A..B, E)`
    Sum,
    /// `prod(i = A..B, E)`
    Prod,
    /// `logsumexp(i = A..B, E)` = log Σ exp(E), evaluated stably.
    LogSumExp,
}

impl ReduceKind {
    /// Every reduction, for lookups.
    pub const ALL: [ReduceKind; 3] = [ReduceKind::Sum, ReduceKind::Prod, ReduceKind::LogSumExp];

    /// The keyword as written.
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "sum",
            ReduceKind::Prod => "prod",
            ReduceKind::LogSumExp => "logsumexp",
        }
    }
}

/// A name with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A number literal; `text` keeps the spelling (`2`, `2.0`, `1e-3`).
    Num {
        /// Its value.
        value: f64,
        /// As written.
        text: String,
    },
    /// A name: variable, param, let, loop index or `pi`.
    Name(String),
    /// `name[i]` or `name[i, j]` (any number of indices is parsed; the checker
    /// holds them against the name's shape).
    Index {
        /// The indexed name.
        name: Ident,
        /// The index expressions, in order.
        indices: Vec<NodeId>,
    },
    /// `DATA.col`, or `DATA.col[i]`: the column named `col` followed by the digits of `i`.
    Column {
        /// The data table.
        data: Ident,
        /// The column (its name's stem when indexed).
        column: Ident,
        /// The index of `DATA.col[i]`.
        index: Option<NodeId>,
    },
    /// Unary minus.
    Neg(NodeId),
    /// A binary operation.
    Binary {
        /// The operator.
        op: BinOp,
        /// Left operand.
        lhs: NodeId,
        /// Right operand.
        rhs: NodeId,
    },
    /// `f(a, …)`, including `pow(a, b)` and `mean(DATA, E)`.
    Call {
        /// Function name.
        func: Ident,
        /// Arguments.
        args: Vec<NodeId>,
    },
    /// `sum(i = lo..hi, body)` or `prod(…)`.
    Reduce {
        /// Sum or product.
        kind: ReduceKind,
        /// Loop index.
        index: Ident,
        /// Lower bound.
        lo: NodeId,
        /// Upper bound (inclusive).
        hi: NodeId,
        /// The summand.
        body: NodeId,
    },
}

impl NodeKind {
    /// The operands of a node, in order.
    pub fn children(&self) -> Vec<NodeId> {
        match self {
            NodeKind::Num { .. } | NodeKind::Name(_) => Vec::new(),
            NodeKind::Column { index, .. } => index.iter().copied().collect(),
            NodeKind::Index { indices, .. } => indices.clone(),
            NodeKind::Neg(a) => vec![*a],
            NodeKind::Binary { lhs, rhs, .. } => vec![*lhs, *rhs],
            NodeKind::Call { args, .. } => args.clone(),
            NodeKind::Reduce { lo, hi, body, .. } => vec![*lo, *hi, *body],
        }
    }
}

/// A whole objective file.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Statements in file order.
    pub statements: Vec<Statement>,
}

/// A statement with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// What it says.
    pub kind: StatementKind,
    /// The whole statement.
    pub span: Span,
}

/// The shape of a vector or matrix: `[n]` or `[rows, cols]` (any number of lengths is
/// parsed; the checker refuses more than two).
#[derive(Clone, Debug, PartialEq)]
pub struct Size {
    /// The lengths, in order.
    pub dims: Vec<Expr>,
    /// The brackets and everything inside.
    pub span: Span,
}

/// A distribution of random start values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DistributionKind {
    /// `normal(M, S)`: mean M, standard deviation S.
    Normal,
    /// `uniform(A, B)`: uniform on [A, B).
    Uniform,
}

impl DistributionKind {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            DistributionKind::Normal => "normal",
            DistributionKind::Uniform => "uniform",
        }
    }
}

/// `~ normal(M, S)` or `~ uniform(A, B)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    /// Which distribution.
    pub kind: DistributionKind,
    /// Its two parameters (M, S or A, B).
    pub args: [Expr; 2],
    /// From `normal`/`uniform` to the closing parenthesis.
    pub span: Span,
}

/// How a variable starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// `= EXPR`: one constant for every coordinate.
    Value(Expr),
    /// `~ DIST`: every coordinate drawn.
    Random(Distribution),
}

/// A `var` declaration: `name`, `name = init`, `name[n] = init`, `name[r, c] ~ dist`.
#[derive(Clone, Debug, PartialEq)]
pub struct VarDecl {
    /// The variable.
    pub name: Ident,
    /// Shape of a vector or matrix variable.
    pub size: Option<Size>,
    /// Start value (default 0).
    pub init: Option<Start>,
}

/// A param's value: an expression, or a list for a vector param.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// `param a = 2*pi`
    Scalar(Expr),
    /// `param a[3] = [1, 2, 3]`
    List(List),
    /// `param a[2, 2] = [[1, 2], [3, 4]]`
    Matrix {
        /// The rows.
        rows: Vec<List>,
        /// The outer brackets.
        span: Span,
    },
}

/// `[e1, …, en]` with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct List {
    /// The entries.
    pub items: Vec<Expr>,
    /// The brackets and everything inside.
    pub span: Span,
}

/// The `noise` statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Noise {
    /// `noise sd E`: Σ = E² I.
    Sd(Expr),
    /// `noise diag [v1, …, vd]`: Σ = diag(v).
    Diag(List),
    /// `noise cov [[…], …]`: Σ given in full.
    Cov {
        /// The rows.
        rows: Vec<List>,
        /// The outer brackets.
        span: Span,
    },
}

/// Where a data table comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// A CSV file, relative to the objective file.
    File {
        /// The path as written.
        path: String,
        /// The string literal.
        span: Span,
    },
    /// An inline table: header row, then rows.
    Inline {
        /// Column names.
        header: Vec<Ident>,
        /// Rows.
        rows: Vec<List>,
    },
}

/// Minibatch sampling scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Each minibatch drawn with replacement.
    WithReplacement,
    /// Each minibatch drawn without replacement (the default).
    WithoutReplacement,
}

/// The statements of docs/language.md.
#[derive(Clone, Debug, PartialEq)]
pub enum StatementKind {
    /// `param NAME [size] = value`
    Param {
        /// The param.
        name: Ident,
        /// Shape of a vector or matrix param.
        size: Option<Size>,
        /// Its value.
        value: ParamValue,
    },
    /// `var a = 1, b`
    Var(Vec<VarDecl>),
    /// `let NAME = EXPR`
    Let {
        /// The name.
        name: Ident,
        /// The expression.
        value: Expr,
    },
    /// `minimize EXPR`
    Minimize(Expr),
    /// `noise …`
    Noise(Noise),
    /// `observe NAME = EXPR`
    Observe {
        /// The name.
        name: Ident,
        /// The test function.
        value: Expr,
    },
    /// `data NAME = "file.csv" | [[…], …]`
    Data {
        /// The table's name.
        name: Ident,
        /// Where it comes from.
        source: DataSource,
    },
    /// `batch B`
    Batch(Expr),
    /// `sampling with-replacement | without-replacement`
    Sampling(Sampling),
    /// `escape when LHS > RHS`: the escape region of `hasme escape`.
    Escape {
        /// Left side.
        lhs: Expr,
        /// Right side (usually `0`).
        rhs: Expr,
    },
}
