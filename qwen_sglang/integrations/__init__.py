"""Adapters for libraries other than LangChain and LlamaIndex (each module imports its library)."""
