//! The parameter store: named runtime-shaped tensors, initialisation, safetensors I/O.
//!
//! dfdx's `nn` modules and optimisers need compile-time shapes, so flowrl keeps its
//! parameters here: an ordered list of named tensors, each stored flat on the device
//! (a `(usize,)` tensor) together with its logical shape. Layers hold [`ParamId`]s and
//! view the flat tensors with the shape they need (a free reshape that keeps the
//! tensor's id, so gradients land in the parameter's own gradient buffer).
//!
//! Initial values are sampled host-side from a `ChaCha8Rng` seeded at construction,
//! in registration order, in f64 and then rounded to `E`: the same seed gives the
//! same parameters on every device.
//!
//! Gradients: run the forward pass on a traced input (`x.leaky_traced()`, or any
//! tensor carrying an `OwnedTape`); parameters enter the graph as tape-less operands
//! and receive gradients through the ops that use them. After `loss.backward()`,
//! [`ParamStore::grads`] collects every parameter's gradient (zeros for parameters the
//! loss never reached). A parameter that is the only or the left operand of an op
//! (an embedding table in `gather`, say) must carry the tape itself:
//! `store.matrix(id).retaped::<T>()` (same id, empty tape of the input's type).

mod codec;

use std::collections::HashMap;

use dfdx::prelude::*;
use rand::distributions::Distribution;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use codec::sorted_header;
pub(crate) use codec::{decode, encode, Metadata};

/// Index of a parameter inside its [`ParamStore`] (registration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(usize);

impl ParamId {
    /// Position of the parameter in registration order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// How a parameter's initial values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with mean 0 and the given standard deviation.
    Normal {
        /// Standard deviation (finite, non-negative).
        std: f64,
    },
    /// Uniform on `[-bound, bound)`.
    Uniform {
        /// Half-width of the interval (finite, positive).
        bound: f64,
    },
}

impl Init {
    /// PyTorch's default `nn.Linear` initialisation, for the weight and for the bias:
    /// uniform on ±1/sqrt(fan_in) (`kaiming_uniform_(a = sqrt(5))` reduces to this).
    pub fn pytorch_linear(fan_in: usize) -> Self {
        Init::Uniform {
            bound: 1.0 / (fan_in as f64).sqrt(),
        }
    }
}

/// Errors of the parameter store and of safetensors encoding and decoding.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    /// A name was looked up that the store does not hold.
    #[error("unknown parameter `{name}` (the store holds {count} parameters)")]
    Unknown {
        /// The name asked for.
        name: String,
        /// How many parameters the store holds.
        count: usize,
    },
    /// A name was registered twice.
    #[error("parameter `{name}` is already registered")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
    /// An initialiser with an unusable constant.
    #[error("parameter `{name}`: invalid initialiser {init:?} (std must be finite and >= 0, bound finite and > 0)")]
    InvalidInit {
        /// The parameter being registered.
        name: String,
        /// The initialiser given.
        init: Init,
    },
    /// A value slice whose length does not match the parameter's shape.
    #[error("parameter `{name}`: expected {expected} values (shape {shape:?}), found {found}")]
    ValueCount {
        /// The parameter.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Number of values the shape needs.
        expected: usize,
        /// Number of values given.
        found: usize,
    },
    /// A tensor the store expects is absent from the safetensors data.
    #[error("tensor `{name}` (shape {shape:?}) is missing from the safetensors data")]
    Missing {
        /// The missing tensor.
        name: String,
        /// Its expected shape.
        shape: Vec<usize>,
    },
    /// The safetensors data holds tensors the store does not know.
    #[error("safetensors data holds tensors that are not expected: {names:?}")]
    Unexpected {
        /// The extra names, sorted.
        names: Vec<String>,
    },
    /// A tensor's shape differs from the registered one.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// The registered shape.
        expected: Vec<usize>,
        /// The shape in the data.
        found: Vec<usize>,
    },
    /// A tensor's element type differs from the store's.
    #[error("tensor `{name}`: expected dtype {expected}, found {found}")]
    Dtype {
        /// The tensor.
        name: String,
        /// The store's dtype (F32 or F64).
        expected: String,
        /// The dtype in the data.
        found: String,
    },
    /// The store's element type has no safetensors counterpart handled here.
    #[error("element type of {bytes} bytes is not supported (only f32 and f64)")]
    UnsupportedElement {
        /// `size_of::<E>()`.
        bytes: usize,
    },
    /// The bytes are not valid safetensors, or a metadata entry is malformed.
    #[error("invalid safetensors data: {0}")]
    Format(String),
    /// A tensor holds NaN or an infinity.
    #[error("tensor `{name}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// The tensor.
        name: String,
        /// Flat index of the first non-finite value.
        index: usize,
        /// The value found.
        value: f64,
    },
    /// A shape whose number of elements does not fit in `usize`.
    #[error("parameter `{name}`: shape {shape:?} holds more elements than can be addressed")]
    TooLarge {
        /// The parameter.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
}

struct Param<E: Dtype, D: Storage<E>> {
    name: String,
    shape: Vec<usize>,
    value: Tensor<(usize,), E, D>,
}

/// Ordered, named, runtime-shaped parameters on one device.
pub struct ParamStore<E: Dtype, D: Storage<E>> {
    dev: D,
    /// A planner records names and shapes only (see [`ParamStore::planner`]).
    planning: bool,
    rng: ChaCha8Rng,
    params: Vec<Param<E, D>>,
    index: HashMap<String, usize>,
}

impl<E, D> ParamStore<E, D>
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    /// An empty store on `dev` whose initialisers draw from `ChaCha8Rng::seed_from_u64(seed)`.
    pub fn new(dev: &D, seed: u64) -> Self {
        Self {
            dev: dev.clone(),
            planning: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
            params: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// A store that records the names and shapes of registered parameters without
    /// allocating or initialising their values (every tensor is empty): it lists, and
    /// sizes, what a config would build before anything is built. Only
    /// [`ParamStore::shapes`] and [`ParamStore::planned_elements`] are meaningful on it.
    pub fn planner(dev: &D) -> Self {
        Self {
            planning: true,
            ..Self::new(dev, 0)
        }
    }

    /// Names and logical shapes of every parameter, in registration order.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.params
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice()))
    }

    /// Total number of scalar parameters the registered shapes hold (also on a
    /// [`planner`](ParamStore::planner); [`register`](ParamStore::register) checked
    /// that each shape's product fits in `usize`, the sum saturates).
    pub fn planned_elements(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .fold(0, usize::saturating_add)
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Registers a parameter of `shape` initialised by `init` and returns its id.
    /// Values are drawn in registration order from the store's seeded stream.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        init: Init,
    ) -> Result<ParamId, ParamError> {
        let name = name.into();
        if self.index.contains_key(&name) {
            return Err(ParamError::Duplicate { name });
        }
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ParamError::TooLarge {
                name: name.clone(),
                shape: shape.to_vec(),
            })?;
        let values: Vec<f64> = match init {
            _ if self.planning => Vec::new(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { std } => {
                let normal =
                    rand_distr::Normal::new(0.0, std).map_err(|_| ParamError::InvalidInit {
                        name: name.clone(),
                        init,
                    })?;
                (0..n).map(|_| normal.sample(&mut self.rng)).collect()
            }
            Init::Uniform { bound } => {
                if !(bound.is_finite() && bound > 0.0) {
                    return Err(ParamError::InvalidInit { name, init });
                }
                let uniform = rand::distributions::Uniform::new(-bound, bound);
                (0..n).map(|_| uniform.sample(&mut self.rng)).collect()
            }
        };
        let values: Vec<E> = values.into_iter().map(from_f64).collect();
        let len = values.len();
        let value = self.dev.tensor_from_vec(values, (len,));
        self.index.insert(name.clone(), self.params.len());
        self.params.push(Param {
            name,
            shape: shape.to_vec(),
            value,
        });
        Ok(ParamId(self.params.len() - 1))
    }

    /// The id of the parameter called `name`.
    pub fn id(&self, name: &str) -> Result<ParamId, ParamError> {
        self.index
            .get(name)
            .map(|&i| ParamId(i))
            .ok_or_else(|| ParamError::Unknown {
                name: name.to_string(),
                count: self.params.len(),
            })
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the store holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn num_elements(&self) -> usize {
        self.params.iter().map(|p| p.value.shape().0).sum()
    }

    /// Ids of all parameters in registration order.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.params.len()).map(ParamId)
    }

    /// The parameter's name.
    pub fn name(&self, id: ParamId) -> &str {
        &self.params[id.0].name
    }

    /// The parameter's logical shape.
    pub fn shape(&self, id: ParamId) -> &[usize] {
        &self.params[id.0].shape
    }

    /// The parameter's values, flat (row-major), on the device.
    pub fn value(&self, id: ParamId) -> &Tensor<(usize,), E, D> {
        &self.params[id.0].value
    }

    pub(crate) fn value_mut(&mut self, id: ParamId) -> &mut Tensor<(usize,), E, D> {
        &mut self.params[id.0].value
    }

    /// A 1-D parameter as a tensor (a view sharing the parameter's id).
    ///
    /// # Panics
    /// If the parameter is not 1-D: layer code registers its parameters and only
    /// asks for the shapes it registered.
    pub fn vector(&self, id: ParamId) -> Tensor<(usize,), E, D> {
        let p = &self.params[id.0];
        assert_eq!(p.shape.len(), 1, "parameter `{}` is not 1-D", p.name);
        p.value.clone()
    }

    /// A 2-D parameter as a `(rows, cols)` tensor (a view sharing the parameter's id).
    ///
    /// # Panics
    /// If the parameter is not 2-D (see [`ParamStore::vector`]).
    pub fn matrix(&self, id: ParamId) -> Tensor<(usize, usize), E, D> {
        let p = &self.params[id.0];
        assert_eq!(p.shape.len(), 2, "parameter `{}` is not 2-D", p.name);
        p.value.clone().reshape_like(&(p.shape[0], p.shape[1]))
    }

    /// The parameter's values copied to the host (flat, row-major).
    pub fn values(&self, id: ParamId) -> Vec<E> {
        self.params[id.0].value.as_vec()
    }

    /// Overwrites the named parameter with `values` (flat, row-major), keeping its id.
    pub fn set_values(&mut self, name: &str, values: &[E]) -> Result<(), ParamError> {
        let id = self.id(name)?;
        let p = &mut self.params[id.0];
        let expected = p.value.shape().0;
        if values.len() != expected {
            return Err(ParamError::ValueCount {
                name: p.name.clone(),
                shape: p.shape.clone(),
                expected,
                found: values.len(),
            });
        }
        p.value.copy_from(values);
        Ok(())
    }

    /// Every parameter's gradient from the gradients of a backward pass, in
    /// registration order. Parameters the loss did not reach get zeros.
    pub fn grads(&self, gradients: &mut Gradients<E, D>) -> ParamGrads<E, D> {
        let grads = self
            .params
            .iter()
            .map(|p| {
                gradients.try_alloc_for(&p.value).unwrap_or_else(|e| {
                    panic!("allocating the gradient of `{}` failed: {e}", p.name)
                });
                gradients.get(&p.value)
            })
            .collect();
        ParamGrads { grads }
    }

    /// Serialises every parameter (name, logical shape, values) to safetensors bytes
    /// with the given metadata map.
    pub fn to_safetensors(&self, metadata: &Metadata) -> Result<Vec<u8>, ParamError> {
        let entries: Vec<(&str, &[usize], Vec<E>)> = self
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_vec()))
            .collect();
        encode(&entries, metadata)
    }

    /// Loads every parameter from safetensors bytes and returns the metadata map.
    /// The data must hold exactly the store's names, with the registered shapes and
    /// the store's dtype; on any error the store is left unchanged.
    pub fn load_safetensors(&mut self, bytes: &[u8]) -> Result<Metadata, ParamError> {
        let expected: Vec<(&str, &[usize])> = self
            .params
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice()))
            .collect();
        let (values, metadata) = decode::<E>(bytes, &expected)?;
        self.set_decoded(values);
        Ok(metadata)
    }

    /// Copies values decoded for this store's parameters (in registration order,
    /// shapes already checked by [`decode`]) into it.
    pub(crate) fn set_decoded(&mut self, values: Vec<Vec<E>>) {
        for (p, v) in self.params.iter_mut().zip(values) {
            p.value.copy_from(&v);
        }
    }
}

/// The gradients of every parameter of a store, in registration order, flat.
pub struct ParamGrads<E: Dtype, D: Storage<E>> {
    grads: Vec<Tensor<(usize,), E, D>>,
}

impl<E, D> ParamGrads<E, D>
where
    E: Dtype + num_traits::Float,
    D: Device<E>,
{
    /// The gradient of one parameter (flat, row-major).
    pub fn get(&self, id: ParamId) -> &Tensor<(usize,), E, D> {
        &self.grads[id.0]
    }

    /// Number of gradient tensors (equals the store's parameter count).
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// Whether there are no gradients.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tensor<(usize,), E, D>> {
        self.grads.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Tensor<(usize,), E, D>> {
        self.grads.iter_mut()
    }
}

/// Converts an f64 constant to the element type (exact for f64, rounded for f32).
pub(crate) fn from_f64<E: num_traits::Float>(x: f64) -> E {
    E::from(x).unwrap_or_else(E::nan)
}

/// Converts an element to f64 (exact for f32 and f64).
pub(crate) fn to_f64<E: num_traits::Float>(x: E) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}
